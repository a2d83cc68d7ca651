//! Checks the code against the test vectors published in docs/PROTOCOL.md ("Test vectors"), byte for
//! byte. Every vector is computed here from fixed inputs (no OS randomness: a scripted RNG hands out the
//! documented values in the order the handshake draws them) and compared by name with the `vectors`
//! blocks of the document; a vector in the document that is not computed here is an error too.
//! `scripts/check_vectors.py` recomputes the same names independently.

use std::collections::BTreeMap;
use std::convert::Infallible;

use ml_kem::kem::Decapsulate as _;
use rand_core::{TryCryptoRng, TryRng};

use crate::auth::{sign_request, signing_bytes};
use crate::frame::AudioPayload;
use crate::handshake::{
    Callee, CalleeParams, Caller, CallerParams, commitment, key_schedule, sas_hash, transcript_hash,
};
use crate::media::MediaCrypto;
use crate::types::to_hex;
use crate::{
    Candidate, Codec, CodecOffer, FrameType, IdentitySecret, PREKEY_LIFETIME_MS, PrekeySecret, SessionId, Username,
    safety_number,
};

/// The handshake's clock: 2026-09-21T12:53:20Z.
pub(crate) const NOW: u64 = 1_790_000_000_000;

/// An RNG that returns exactly the bytes it was given, in order, and records how many were asked for.
/// `next_u32` takes four bytes big-endian.
pub(crate) struct ScriptedRng {
    bytes: Vec<u8>,
    pos: usize,
}

impl ScriptedRng {
    pub(crate) fn new(parts: &[&[u8]]) -> Self {
        Self { bytes: parts.concat(), pos: 0 }
    }

    fn take(&mut self, out: &mut [u8]) {
        let end = self.pos + out.len();
        assert!(end <= self.bytes.len(), "the handshake drew more randomness than the vectors script");
        out.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

impl TryRng for ScriptedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.take(&mut b);
        Ok(u32::from_be_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.take(&mut b);
        Ok(u64::from_be_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.take(dst);
        Ok(())
    }
}

impl TryCryptoRng for ScriptedRng {}

/// Every published vector, by name: hex for bytes, plain text for the SAS and the safety number.
pub(crate) fn compute() -> BTreeMap<&'static str, String> {
    let mut v = BTreeMap::new();
    // Key schedule from fixed inputs.
    let s = key_schedule(&[0x11; 32], &[0x22; 32], &[0x33; 32], &[0x44; 32], &[0x55; 32]);
    v.insert("c2s_key", to_hex(&s.caller_to_callee.key));
    v.insert("c2s_iv", to_hex(&s.caller_to_callee.iv));
    v.insert("c2s_obf", to_hex(&s.caller_to_callee.obf));
    v.insert("s2c_key", to_hex(&s.callee_to_caller.key));
    v.insert("s2c_iv", to_hex(&s.callee_to_caller.iv));
    v.insert("s2c_obf", to_hex(&s.callee_to_caller.obf));
    v.insert("sas", s.sas.clone());
    // Sealed frames with the c2s keys above.
    let mut caller = MediaCrypto::new(
        &s.caller_to_callee,
        &s.callee_to_caller,
        SessionId(0x0102_0304),
        SessionId(0x0a0b_0c0d),
        false,
    );
    let mut payload = [0u8; 64];
    let n = AudioPayload { timestamp: 960, data: b"qvoice test frame" }.write_to(&mut payload).unwrap_or(0);
    let mut wire = [0u8; 128];
    let plain_len = caller.seal(FrameType::Audio, &payload[..n], &mut wire).unwrap_or(0);
    v.insert("frame_plain", to_hex(&wire[..plain_len]));
    caller.set_obfuscation(true);
    let obf_len = caller.seal(FrameType::Audio, &payload[..n], &mut wire).unwrap_or(0);
    v.insert("frame_obfuscated", to_hex(&wire[..obf_len]));
    // Identities and the safety number.
    let alice = IdentitySecret::from_bytes(&[0xa1; 32]);
    let bob = IdentitySecret::from_bytes(&[0xb0; 32]);
    v.insert("alice_key", to_hex(alice.public().as_bytes()));
    v.insert("bob_key", to_hex(bob.public().as_bytes()));
    let (Ok(an), Ok(bn)) = (Username::parse("alice"), Username::parse("bob")) else { return v };
    v.insert("safety", safety_number(&an, &alice.public(), &bn, &bob.public()));
    handshake_vectors(&mut v, &alice, &bob, an, bn);
    request_vector(&mut v, &alice);
    v
}

/// One whole call setup between alice (caller) and bob (callee) from the documented inputs.
fn handshake_vectors(
    v: &mut BTreeMap<&'static str, String>,
    alice: &IdentitySecret,
    bob: &IdentitySecret,
    an: Username,
    bn: Username,
) {
    let mut seed = [0xc1u8; 64];
    seed[32..].fill(0xc2);
    let prekey = PrekeySecret::from_seed(7, &seed);
    let signed = prekey.sign(bob, NOW + PREKEY_LIFETIME_MS);
    v.insert("prekey_signed", to_hex(&signed.to_bytes()));
    v.insert("prekey_sig", to_hex(&signed.sig));

    let call_id: Vec<u8> = (0u8..16).collect();
    let cand = |s: &str| s.parse().map(Candidate::host).ok();
    let caller_params = CallerParams {
        caller: an,
        callee: bn.clone(),
        codecs: vec![CodecOffer::new(Codec::Opus, &[10, 20, 40, 60]), CodecOffer::new(Codec::Pcm16, &[10, 20, 40])],
        frame_ms: 20,
        candidates: [cand("192.0.2.1:40000"), cand("[2001:db8::1]:40001")].into_iter().flatten().collect(),
        obfuscation: true,
    };
    let mut rng = ScriptedRng::new(&[&call_id, &[0x11, 0x22, 0x33, 0x44], &[0x3c; 32], &[0x4d; 32]]);
    let Ok((caller, offer)) = Caller::start(&mut rng, NOW, alice, caller_params, &bob.public(), &signed) else {
        return;
    };
    assert!(rng.exhausted(), "the OFFER used all of its scripted randomness");
    v.insert("offer", to_hex(offer.to_bytes()));
    v.insert("offer_sig", to_hex(&offer.to_bytes()[offer.to_bytes().len() - 64..]));
    v.insert("commit", to_hex(&offer.commit));

    let callee_params = CalleeParams {
        callee: bn,
        codecs: vec![CodecOffer::new(Codec::Opus, &[10, 20, 40, 60]), CodecOffer::new(Codec::Pcm16, &[10, 20, 40])],
        candidates: [cand("198.51.100.2:50000")].into_iter().flatten().collect(),
        obfuscation: true,
    };
    let mut rng = ScriptedRng::new(&[&[0x55, 0x66, 0x77, 0x88], &[0x5e; 32], &[0x6a; 32], &[0x6b; 32]]);
    let Ok((callee, answer)) = Callee::on_offer(&mut rng, NOW + 50, bob, &alice.public(), &offer, callee_params) else {
        return;
    };
    assert!(rng.exhausted(), "the ANSWER used all of its scripted randomness");
    v.insert("answer", to_hex(answer.to_bytes()));
    v.insert("answer_sig", to_hex(&answer.to_bytes()[answer.to_bytes().len() - 64..]));

    let mut rng = ScriptedRng::new(&[&[0x7f; 32]]);
    let Ok((reveal, ck)) = caller.on_answer(&mut rng, &answer) else { return };
    assert!(rng.exhausted(), "the REVEAL used all of its scripted randomness");
    v.insert("reveal", to_hex(reveal.to_bytes()));
    v.insert("reveal_sig", to_hex(&reveal.to_bytes()[reveal.to_bytes().len() - 64..]));
    assert_eq!(commitment(&reveal.call_id, &reveal.eph_x25519, reveal.prekey_id, &reveal.ct_pre), offer.commit);
    // The three shared secrets, recomputed from the documented secrets (the handshake zeroizes its own).
    let dh = x25519_dalek::x25519([0x3c; 32], answer.eph_x25519);
    v.insert("handshake_dh", to_hex(&dh));
    let ct_pre = ml_kem::ml_kem_768::Ciphertext::from(*reveal.ct_pre);
    v.insert("handshake_ss_pre", to_hex(prekey.decapsulation_key().decapsulate(&ct_pre).as_slice()));
    let mut eph_seed = [0x6au8; 64];
    eph_seed[32..].fill(0x6b);
    let eph_kem = ml_kem::ml_kem_768::DecapsulationKey::from_seed(eph_seed.into());
    let ct_eph = ml_kem::ml_kem_768::Ciphertext::from(*reveal.ct_eph);
    v.insert("handshake_ss_eph", to_hex(eph_kem.decapsulate(&ct_eph).as_slice()));
    v.insert("transcript_t", to_hex(&transcript_hash(&offer, &answer, &reveal)));
    v.insert("transcript_t_sas", to_hex(&sas_hash(&offer, &answer, &reveal)));
    let Ok(sk) = callee.on_reveal(&reveal, &[prekey]) else { return };
    assert_eq!((ck.sas.as_str(), ck.transcript_hash), (sk.sas.as_str(), sk.transcript_hash));
    v.insert("handshake_sas", ck.sas.clone());
    // The caller's first sealed audio frame of this call (c2s keys, to the callee's session id, with
    // obfuscation as negotiated): the whole key schedule end to end.
    let mut media = ck.media;
    let mut payload = [0u8; 64];
    let n = AudioPayload { timestamp: 0, data: b"first frame" }.write_to(&mut payload).unwrap_or(0);
    let mut wire = [0u8; 128];
    let len = media.seal(FrameType::Audio, &payload[..n], &mut wire).unwrap_or(0);
    v.insert("handshake_first_frame", to_hex(&wire[..len]));
}

/// A complete signed request: alice hangs up call 000102…0f at registry https://registry.example.
fn request_vector(v: &mut BTreeMap<&'static str, String>, alice: &IdentitySecret) {
    let origin = "https://registry.example:443";
    let body = br#"{"call_id":"000102030405060708090a0b0c0d0e0f","reason":null,"kind":"hangup"}"#;
    let bytes = signing_bytes(origin, "POST", "/call/hangup", "alice", NOW, body);
    v.insert("request_signing_bytes", to_hex(&bytes));
    v.insert("request_signature", to_hex(&sign_request(alice, origin, "POST", "/call/hangup", "alice", NOW, body)));
}

/// The `name = value` entries of every ```` ```vectors ```` block of `doc`: continuation lines (indented)
/// are appended with their whitespace removed; a value in double quotes is taken verbatim.
pub(crate) fn parse_doc(doc: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut in_block = false;
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            in_block = line.trim() == "```vectors";
            current = None;
            continue;
        }
        if !in_block || line.trim().is_empty() {
            continue;
        }
        if line.starts_with(' ') {
            if let Some(name) = &current
                && let Some(v) = out.get_mut(name)
            {
                let v: &mut String = v;
                v.extend(line.chars().filter(|c| !c.is_whitespace()));
            }
            continue;
        }
        let entry = line.split_once(" = ").or_else(|| line.trim_end().strip_suffix(" =").map(|n| (n, "")));
        if let Some((name, value)) = entry {
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(text) => text.to_owned(),
                None => value.chars().filter(|c| !c.is_whitespace()).collect(),
            };
            out.insert(name.trim().to_owned(), value);
            current = Some(name.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = include_str!("../../docs/PROTOCOL.md");

    #[test]
    fn code_matches_published_vectors() {
        let computed = compute();
        let published = parse_doc(DOC);
        for (name, value) in &computed {
            assert_eq!(published.get(*name), Some(value), "docs/PROTOCOL.md vector {name}");
        }
        for name in published.keys() {
            assert!(computed.contains_key(name.as_str()), "docs/PROTOCOL.md has vector {name} that nothing checks");
        }
        assert!(computed.len() >= 30, "every vector is computed ({} now)", computed.len());
    }

    #[test]
    fn the_doc_parser_reads_continuations_and_text() {
        let doc = "x\n```vectors\na = 0102\n  0304 05\nb = \"9aep z\"\nd =\n  ff\n```\nc = 99\n";
        let p = parse_doc(doc);
        assert_eq!(p.get("a").map(String::as_str), Some("0102030405"));
        assert_eq!(p.get("b").map(String::as_str), Some("9aep z"));
        assert_eq!(p.get("d").map(String::as_str), Some("ff"));
        assert!(!p.contains_key("c"), "outside a vectors block");
    }

    /// Prints the vectors block for the document: `cargo test -p qvoice-proto print_vectors -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "prints the document block"]
    fn print_vectors() {
        for (name, value) in compute() {
            if value.len() <= 96 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                let quoted = !value.bytes().all(|b| b.is_ascii_hexdigit());
                if quoted { println!("{name} = \"{value}\"") } else { println!("{name} = {value}") }
            } else {
                println!("{name} =");
                for chunk in value.as_bytes().chunks(96) {
                    println!("  {}", String::from_utf8_lossy(chunk));
                }
            }
        }
    }
}
