//! Two-peer handshake tests on seeded randomness, including substitution attacks by the registry.

use super::*;
use crate::FrameType;
use crate::media::tests_support::exchange;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const NOW: u64 = 1_790_000_000_000;

pub(crate) struct Peer {
    pub name: Username,
    pub id: IdentitySecret,
    pub prekeys: Vec<PrekeySecret>,
}

impl Peer {
    pub fn new(rng: &mut ChaCha20Rng, name: &str) -> Self {
        let id = IdentitySecret::generate(rng);
        let prekeys = vec![PrekeySecret::generate(rng, 1)];
        Self { name: Username::parse(name).unwrap(), id, prekeys }
    }
    pub fn signed_prekey(&self) -> SignedPrekey {
        self.prekeys[0].sign(&self.id, NOW + 86_400_000)
    }
}

fn caller_params(a: &Peer, b: &Peer) -> CallerParams {
    CallerParams {
        caller: a.name.clone(),
        callee: b.name.clone(),
        codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
        frame_ms: 20,
        candidates: vec![
            Candidate::host("127.0.0.1:4000".parse().unwrap()),
            Candidate("[::1]:4001".parse().unwrap(), crate::CandidateKind::Relayed),
        ],
        obfuscation: true,
    }
}

fn callee_params(b: &Peer) -> CalleeParams {
    CalleeParams {
        callee: b.name.clone(),
        codecs: vec![Codec::Pcm16.into(), Codec::Opus.into()],
        candidates: vec![Candidate("127.0.0.1:5000".parse().unwrap(), crate::CandidateKind::ServerReflexive)],
        obfuscation: true,
    }
}

/// Runs the three messages through byte encodings, as the registry relays them.
pub(crate) fn handshake(rng: &mut ChaCha20Rng, a: &Peer, b: &Peer) -> (SessionKeys, SessionKeys) {
    let (caller, offer) =
        Caller::start(rng, NOW, &a.id, caller_params(a, b), &b.id.public(), &b.signed_prekey()).unwrap();
    let offer = Offer::parse(offer.to_bytes()).unwrap();
    let (callee, answer) = Callee::on_offer(rng, NOW + 50, &b.id, &a.id.public(), &offer, callee_params(b)).unwrap();
    let answer = Answer::parse(answer.to_bytes()).unwrap();
    let (reveal, ck) = caller.on_answer(rng, &answer).unwrap();
    let reveal = Reveal::parse(reveal.to_bytes()).unwrap();
    let sk = callee.on_reveal(&reveal, &b.prekeys).unwrap();
    (ck, sk)
}

#[test]
fn full_handshake_derives_equal_keys_and_sas() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (mut ck, mut sk) = handshake(&mut rng, &a, &b);
    assert_eq!(ck.sas, sk.sas);
    assert_eq!(ck.sas.len(), 4);
    assert_eq!(ck.transcript_hash, sk.transcript_hash);
    assert_eq!(ck.call_id, sk.call_id);
    assert_eq!((ck.codec, sk.codec), (Codec::Opus, Codec::Opus), "caller's preference wins");
    assert_eq!(ck.peer_key, b.id.public());
    assert_eq!(sk.peer_key, a.id.public());
    assert_eq!(ck.peer_candidates, callee_params(&b).candidates);
    assert_eq!(sk.peer_candidates, caller_params(&a, &b).candidates);
    assert!(ck.media.obfuscation() && sk.media.obfuscation());
    exchange(&mut ck.media, &mut sk.media, FrameType::Audio, b"caller to callee");
    exchange(&mut sk.media, &mut ck.media, FrameType::Audio, b"callee to caller");
}

#[test]
fn different_calls_get_different_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (mut k1, _) = handshake(&mut rng, &a, &b);
    let (_, mut k2) = handshake(&mut rng, &a, &b);
    assert_ne!(k1.transcript_hash, k2.transcript_hash);
    let (mut wire, mut out) = ([0u8; 128], [0u8; 128]);
    let n = k1.media.seal(FrameType::Audio, b"x", &mut wire).unwrap();
    // Same session ids would be a coincidence; force them equal so only the key differs.
    wire[2..6].copy_from_slice(&k2.media.local_session().0.to_be_bytes());
    assert_eq!(k2.media.open(&wire[..n], &mut out), Err(Error::TagFailure));
}

#[test]
fn substituted_unsigned_prekey_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (a, b, m) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"), Peer::new(&mut rng, "mallory"));
    // The registry serves Mallory's prekey (signed by Mallory) under Bob's real identity key.
    let err =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &m.signed_prekey()).unwrap_err();
    assert_eq!(err, Error::BadSignature);
    let mut forged = b.signed_prekey();
    forged.ek = m.prekeys[0].public_bytes();
    let err = Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &forged).unwrap_err();
    assert_eq!(err, Error::BadSignature);
}

#[test]
fn substituted_identity_key_is_detected_by_the_real_callee_signature() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let (a, b, m) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"), Peer::new(&mut rng, "mallory"));
    // The registry hands Alice Mallory's identity and prekey as "bob"; the real Bob answers.
    let (caller, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &m.id.public(), &m.signed_prekey()).unwrap();
    let (_callee, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, callee_params(&b)).unwrap();
    assert_eq!(caller.on_answer(&mut rng, &answer).unwrap_err(), Error::BadSignature);
    // And Bob refuses an OFFER whose signer is not the caller key he knows.
    let err = Callee::on_offer(&mut rng, NOW, &b.id, &m.id.public(), &offer, callee_params(&b)).unwrap_err();
    assert_eq!(err, Error::BadSignature);
}

#[test]
fn full_man_in_the_middle_yields_different_sas() {
    // Mallory controls the registry and presents her own keys to both sides under the other's name.
    for seed in 0..20 {
        let mut rng = ChaCha20Rng::seed_from_u64(100 + seed);
        let (a, b, m) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"), Peer::new(&mut rng, "mallory"));
        let m_as_bob = Peer {
            name: b.name.clone(),
            id: IdentitySecret::from_bytes(&m.id.to_bytes()),
            prekeys: vec![PrekeySecret::from_seed(1, &m.prekeys[0].to_seed())],
        };
        let m_as_alice =
            Peer { name: a.name.clone(), id: IdentitySecret::from_bytes(&m.id.to_bytes()), prekeys: vec![] };
        let (alice_side, _) = handshake(&mut rng, &a, &m_as_bob);
        let (_, bob_side) = handshake(&mut rng, &m_as_alice, &b);
        assert_ne!(alice_side.sas, bob_side.sas, "seed {seed}");
        assert_eq!(alice_side.peer_key, m.id.public(), "the pinned identity key differs from Bob's");
    }
}

/// Rewrites bytes of a message body and re-parses it, keeping the old signature.
fn tamper(raw: &[u8], at: usize) -> Vec<u8> {
    let mut v = raw.to_vec();
    v[at] ^= 0x01;
    v
}

#[test]
fn tampered_answer_or_reveal_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (caller, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (callee, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, callee_params(&b)).unwrap();
    // Flip a bit of the ephemeral X25519 key (right after the candidates).
    let raw = answer.to_bytes();
    let eph_at = raw.len() - SIGNATURE_LEN - KEM_PUBLIC_LEN - 32;
    let bad = Answer::parse(&tamper(raw, eph_at)).unwrap();
    assert_eq!(bad.verify(&offer), Err(Error::BadSignature));
    // The ephemeral ML-KEM key: a flipped low bit keeps it a valid key encoding.
    let bad = Answer::parse(&tamper(raw, raw.len() - SIGNATURE_LEN - 2)).unwrap();
    let caller2 =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap().0;
    assert!(caller2.on_answer(&mut rng, &bad).is_err());

    let (reveal, _) = caller.on_answer(&mut rng, &answer).unwrap();
    let raw = reveal.to_bytes();
    for at in [2 + 16 + 1, 2 + 16 + 32 + 4 + 5, raw.len() - SIGNATURE_LEN - 7] {
        let bad = Reveal::parse(&tamper(raw, at)).unwrap();
        assert_eq!(bad.verify(&offer, &answer), Err(Error::BadSignature), "byte {at}");
    }
    callee.on_reveal(&reveal, &b.prekeys).unwrap();
}

#[test]
fn commitment_mismatch_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(15);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (caller, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (callee, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, callee_params(&b)).unwrap();
    let (reveal, _) = caller.on_answer(&mut rng, &answer).unwrap();
    // A correctly signed REVEAL whose X25519 share differs from the committed one (a caller changing
    // its mind after seeing the ANSWER).
    let (body, _) = split_sig(reveal.to_bytes()).unwrap();
    let mut body = body.to_vec();
    body[2 + 16] ^= 0x40;
    let sig = a.id.sign(&concat(&[REVEAL_SIG, offer.to_bytes(), answer.to_bytes(), &body]));
    body.extend_from_slice(&sig);
    let forged = Reveal::parse(&body).unwrap();
    assert_eq!(forged.verify(&offer, &answer), Err(Error::CommitmentMismatch));
    assert_eq!(callee.on_reveal(&forged, &b.prekeys).unwrap_err(), Error::CommitmentMismatch);
}

#[test]
fn wrong_state_errors() {
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let (a, b, c) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"), Peer::new(&mut rng, "carol"));
    let (_, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    // Addressed to bob, answered by carol.
    let err = Callee::on_offer(&mut rng, NOW, &c.id, &a.id.public(), &offer, callee_params(&c)).unwrap_err();
    assert_eq!(err, Error::WrongState("offer addressed to another user"));
    let err = Callee::on_offer(&mut rng, NOW + OFFER_MAX_AGE_MS + 1, &b.id, &a.id.public(), &offer, callee_params(&b))
        .unwrap_err();
    assert_eq!(err, Error::WrongState("offer expired"));
    let mut nothing = callee_params(&b);
    nothing.codecs = vec![];
    let err = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, nothing).unwrap_err();
    assert_eq!(err, Error::Incompatible("the OFFER cannot be run"));

    // An ANSWER and REVEAL from another call.
    let (caller1, offer1) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (caller2, offer2) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (callee1, answer1) =
        Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer1, callee_params(&b)).unwrap();
    let (_callee2, answer2) =
        Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer2, callee_params(&b)).unwrap();
    assert_eq!(caller1.on_answer(&mut rng, &answer2).unwrap_err(), Error::WrongState("answer for another call"));
    let (reveal2, _) = caller2.on_answer(&mut rng, &answer2).unwrap();
    assert_eq!(callee1.on_reveal(&reveal2, &b.prekeys).unwrap_err(), Error::WrongState("reveal for another call"));
    let _ = answer1;
}

#[test]
fn unknown_prekey_id_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (caller, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (callee, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, callee_params(&b)).unwrap();
    let (reveal, _) = caller.on_answer(&mut rng, &answer).unwrap();
    let rotated = vec![PrekeySecret::generate(&mut rng, 2)];
    assert_eq!(callee.on_reveal(&reveal, &rotated).unwrap_err(), Error::WrongState("REVEAL uses an unknown prekey id"));
}

#[test]
fn truncated_and_garbage_messages_never_panic() {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let (caller, offer) =
        Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &b.signed_prekey()).unwrap();
    let (_, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &offer, callee_params(&b)).unwrap();
    let (reveal, _) = caller.on_answer(&mut rng, &answer).unwrap();
    for raw in [offer.to_bytes(), answer.to_bytes(), reveal.to_bytes()] {
        for n in 0..raw.len() {
            assert!(Offer::parse(&raw[..n]).is_err() || n == raw.len());
            assert!(Answer::parse(&raw[..n]).is_err());
            assert!(Reveal::parse(&raw[..n]).is_err());
        }
        let mut longer = raw.to_vec();
        longer.push(0);
        assert!(Offer::parse(&longer).is_err() && Answer::parse(&longer).is_err() && Reveal::parse(&longer).is_err());
    }
    assert!(Offer::parse(&[0u8; 5000]).is_err());
}

/// Builds and signs an ANSWER by hand with the given choices (what a buggy or newer callee might send).
fn forged_answer(offer: &Offer, callee: &Peer, rng: &mut ChaCha20Rng, codec: u8, frame_ms: u8, caps: u32) -> Answer {
    let eph = EphemeralSecret::random_from_rng(rng);
    let kem = DecapsulationKey::generate_from_rng(rng);
    let mut w = Writer::default();
    header(&mut w, MSG_ANSWER, &offer.call_id);
    w.u32(caps).bytes(callee.id.public().as_bytes()).u32(7).u8(codec).u8(frame_ms);
    write_candidates(&mut w, &[]);
    w.bytes(PublicKey::from(&eph).as_bytes()).bytes(kem.encapsulation_key().to_bytes().as_slice());
    let sig = callee.id.sign(&concat(&[ANSWER_SIG, offer.to_bytes(), &w.buf]));
    w.bytes(&sig);
    Answer::parse(&w.buf).unwrap()
}

#[test]
fn caller_refuses_an_answer_with_choices_it_did_not_offer() {
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let mut params = caller_params(&a, &b);
    params.codecs = vec![CodecOffer::new(Codec::Pcm16, &[20, 40])];
    params.obfuscation = false;
    let start = |rng: &mut ChaCha20Rng| {
        Caller::start(rng, NOW, &a.id, params.clone(), &b.id.public(), &b.signed_prekey()).unwrap()
    };
    // The case: 20 ms offered (and 40), the callee answers 10 ms.
    let (caller, offer) = start(&mut rng);
    let answer = forged_answer(&offer, &b, &mut rng, Codec::Pcm16.as_u8(), 10, 0);
    let err = caller.on_answer(&mut rng, &answer).unwrap_err();
    assert_eq!(err, Error::Incompatible("the ANSWER chose a frame duration that was not offered for its codec"));
    // A codec that was not offered.
    let (caller, offer) = start(&mut rng);
    let answer = forged_answer(&offer, &b, &mut rng, Codec::Opus.as_u8(), 20, 0);
    assert_eq!(
        caller.on_answer(&mut rng, &answer).unwrap_err(),
        Error::Incompatible("the ANSWER chose a codec that was not offered")
    );
    // A capability that was not offered (obfuscation, and an unknown bit).
    for bits in [caps::OBFUSCATION, 1 << 5] {
        let (caller, offer) = start(&mut rng);
        let answer = forged_answer(&offer, &b, &mut rng, Codec::Pcm16.as_u8(), 40, bits);
        assert_eq!(
            caller.on_answer(&mut rng, &answer).unwrap_err(),
            Error::Incompatible("the ANSWER turned on a capability that was not offered")
        );
    }
    // Another offered duration is a valid choice: the call runs at it.
    let (caller, offer) = start(&mut rng);
    let answer = forged_answer(&offer, &b, &mut rng, Codec::Pcm16.as_u8(), 40, 0);
    let (_, keys) = caller.on_answer(&mut rng, &answer).unwrap();
    assert_eq!((keys.codec, keys.frame_ms), (Codec::Pcm16, 40));
}

#[test]
fn callee_selection_and_refusals() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let offer_with = |rng: &mut ChaCha20Rng, codecs: Vec<CodecOffer>, frame_ms: u8| {
        let mut p = caller_params(&a, &b);
        p.codecs = codecs;
        p.frame_ms = frame_ms;
        Caller::start(rng, NOW, &a.id, p, &b.id.public(), &b.signed_prekey()).unwrap().1
    };
    // What qvoice runs today: PCM16 at 10/20/40, Opus at 10/20/40/60.
    let ours = [CodecOffer::new(Codec::Opus, &[10, 20, 40, 60]), CodecOffer::new(Codec::Pcm16, &[10, 20, 40])];
    // The failing OFFER: PCM16 at 64 ms only. Refused before answering, with a reason.
    let o = offer_with(&mut rng, vec![CodecOffer::new(Codec::Pcm16, &[64])], 64);
    let refusal = choose(&o, &ours).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "no common frame duration for pcm: offered 64 ms; the callee runs 10/20/40 ms",
        "the reason the caller shows"
    );
    assert!(refusal.to_string().len() <= 128, "fits the registry's reason limit");
    assert_eq!(
        Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &o, callee_params(&b)).map(|_| ()),
        Ok(()),
        "a callee running every protocol duration answers it"
    );
    // Opus only, callee runs PCM16 only.
    let o = offer_with(&mut rng, vec![Codec::Opus.into()], 20);
    let refusal = choose(&o, &[CodecOffer::new(Codec::Pcm16, &[20])]).unwrap_err();
    assert_eq!(refusal.to_string(), "no common codec: offered opus; the callee runs pcm");
    // Preferred duration not common: the closest common one (a tie goes to the shorter).
    let o = offer_with(&mut rng, vec![CodecOffer::new(Codec::Pcm16, &[10, 20, 60, 64])], 60);
    assert_eq!(choose(&o, &ours), Ok(Choice { codec: Codec::Pcm16, frame_ms: 20 }));
    let o = offer_with(&mut rng, vec![CodecOffer::new(Codec::Opus, &[10, 40, 60])], 60);
    let short = [CodecOffer::new(Codec::Opus, &[10, 20, 40])];
    assert_eq!(choose(&o, &short), Ok(Choice { codec: Codec::Opus, frame_ms: 40 }));
    // The caller's codec order wins over the callee's; a codec without a common duration is skipped.
    let o = offer_with(&mut rng, vec![CodecOffer::new(Codec::Pcm16, &[64]), CodecOffer::new(Codec::Opus, &[20])], 20);
    assert_eq!(choose(&o, &ours), Ok(Choice { codec: Codec::Opus, frame_ms: 20 }));
    // The ANSWER carries the choice and the caller accepts it.
    let (caller, o) = Caller::start(
        &mut rng,
        NOW,
        &a.id,
        CallerParams { codecs: vec![CodecOffer::new(Codec::Pcm16, &[20, 40])], frame_ms: 20, ..caller_params(&a, &b) },
        &b.id.public(),
        &b.signed_prekey(),
    )
    .unwrap();
    let mut p = callee_params(&b);
    p.codecs = vec![CodecOffer::new(Codec::Pcm16, &[40])];
    let (callee, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &o, p).unwrap();
    assert_eq!((answer.codec, answer.frame_ms), (Codec::Pcm16, 40));
    let (reveal, ck) = caller.on_answer(&mut rng, &answer).unwrap();
    let sk = callee.on_reveal(&reveal, &b.prekeys).unwrap();
    assert_eq!((ck.frame_ms, sk.frame_ms, ck.sas.clone()), (40, 40, sk.sas));
}

/// An OFFER built by hand with chosen version byte, capabilities and raw codec entries, signed by `a`.
fn raw_offer(a: &Peer, b: &Peer, version: u8, capabilities: u32, codecs: &[(u8, u8)]) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(version).u8(MSG_OFFER).bytes(&[9; 16]);
    w.u8(version.max(PROTOCOL_VERSION)).u32(capabilities);
    w.short_str(a.name.as_str()).short_str(b.name.as_str()).bytes(a.id.public().as_bytes());
    w.u64(NOW).u32(1).u8(20).u8(codecs.len() as u8);
    for (c, d) in codecs {
        w.u8(*c).u8(*d);
    }
    write_candidates(&mut w, &[]);
    w.bytes(&[0; 32]);
    let sig = a.id.sign(&concat(&[OFFER_SIG, &w.buf]));
    w.bytes(&sig);
    w.buf
}

#[test]
fn versions_capabilities_and_unknown_codecs() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    let opus20 = (Codec::Opus.as_u8(), FrameDurations::from_ms(&[20]).bits());
    // Another version: a distinct error, so the callee can refuse with a reason instead of "malformed".
    assert_eq!(Offer::parse(&raw_offer(&a, &b, 3, 0, &[opus20])).unwrap_err(), Error::UnsupportedVersion(3));
    assert_eq!(Offer::parse(&raw_offer(&a, &b, 1, 0, &[opus20])).unwrap_err(), Error::UnsupportedVersion(1));
    // Unknown optional capability bits are ignored and not echoed.
    let o = Offer::parse(&raw_offer(&a, &b, PROTOCOL_VERSION, 1 << 7 | caps::OBFUSCATION, &[opus20])).unwrap();
    o.verify().unwrap();
    let (_, answer) = Callee::on_offer(&mut rng, NOW, &b.id, &a.id.public(), &o, callee_params(&b)).unwrap();
    assert_eq!(answer.capabilities, caps::OBFUSCATION);
    // An unknown critical bit: refused, with a reason.
    let o = Offer::parse(&raw_offer(&a, &b, PROTOCOL_VERSION, 1 << 20, &[opus20])).unwrap();
    assert_eq!(choose(&o, &callee_params(&b).codecs), Err(Refusal::CriticalCapabilities(1 << 20)));
    // An unknown codec id next to a known one is skipped; only unknown ones: no common codec.
    let o = Offer::parse(&raw_offer(&a, &b, PROTOCOL_VERSION, 0, &[(77, 0xff), opus20])).unwrap();
    assert_eq!(o.codecs, vec![CodecOffer::new(Codec::Opus, &[20])]);
    let o = Offer::parse(&raw_offer(&a, &b, PROTOCOL_VERSION, 0, &[(77, 1)])).unwrap();
    assert!(matches!(choose(&o, &callee_params(&b).codecs), Err(Refusal::NoCommonCodec { .. })));
    // Durations the protocol does not define for a codec are malformed: Opus at 64 ms, an undefined bit.
    for bad in [(Codec::Opus.as_u8(), 0b1_0000), (Codec::Pcm16.as_u8(), 0b10_0000), (Codec::Opus.as_u8(), 0)] {
        assert!(matches!(Offer::parse(&raw_offer(&a, &b, PROTOCOL_VERSION, 0, &[bad])), Err(Error::Malformed(_))));
    }
}

#[test]
fn caller_refuses_an_expired_prekey() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let (a, b) = (Peer::new(&mut rng, "alice"), Peer::new(&mut rng, "bob"));
    // The registry keeps serving a prekey signed to expire at NOW.
    let stale = b.prekeys[0].sign(&b.id, NOW);
    let err = Caller::start(&mut rng, NOW, &a.id, caller_params(&a, &b), &b.id.public(), &stale).unwrap_err();
    assert_eq!(err, Error::PrekeyExpired { expires_ms: NOW });
    Caller::start(&mut rng, NOW - 1, &a.id, caller_params(&a, &b), &b.id.public(), &stale).unwrap();
}
