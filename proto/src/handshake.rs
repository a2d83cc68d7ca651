//! The per-call hybrid handshake: OFFER, ANSWER, REVEAL relayed by the registry, and the key schedule.
//!
//! ```text
//! caller                                   callee
//!   OFFER  (call id, names, codecs, candidates, commit)  ─▶   signed by caller
//!   ◀─  ANSWER (eph X25519, eph ML-KEM-768 ek, codec)         signed by callee over OFFER‖ANSWER
//!   REVEAL (eph X25519, ct_pre, ct_eph)                  ─▶   signed by caller over OFFER‖ANSWER‖REVEAL
//! ```
//!
//! `ct_pre` is the seed's step (encapsulation to the callee's registered prekey); `ct_eph` encapsulates to a
//! key that only lives for this call, which gives post-quantum forward secrecy. The commitment in the OFFER
//! binds the caller's X25519 share and `ct_pre` before the callee (or a man in the middle) speaks. `ct_eph`
//! cannot be committed (it needs the ANSWER), so the short authentication string is derived only from
//! committed or signed-before-reveal inputs: an attacker who controls `ct_eph` still cannot grind the SAS.
//!
//! The state machines are typestates: each step consumes the previous state, so a message in the wrong
//! order does not type-check in the driver and yields [`Error::WrongState`] when it arrives from the wire.

use std::fmt;

use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate as _, Encapsulate as _, Generate as _, KeyExport as _};
use ml_kem::ml_kem_768::{Ciphertext, DecapsulationKey};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::identity::{KEM_CIPHERTEXT_LEN, KEM_PUBLIC_LEN, SIGNATURE_LEN, encapsulation_key};
use crate::media::DirectionKeys;
use crate::types::{read_candidates, write_candidates};
use crate::{
    CallId, Candidate, Codec, CodecOffer, Error, FrameDurations, IdentityKey, IdentitySecret, MediaCrypto,
    PROTOCOL_VERSION, PrekeySecret, Role, SessionId, SignedPrekey, Username,
};

pub const MSG_OFFER: u8 = 1;
pub const MSG_ANSWER: u8 = 2;
pub const MSG_REVEAL: u8 = 3;

/// Most codecs one OFFER may list.
pub const MAX_CODECS: usize = 4;
/// Largest encoded handshake message (an ANSWER with 8 IPv6 candidates is about 1.5 KB).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// How long an OFFER stays acceptable, measured against its own timestamp.
pub const OFFER_MAX_AGE_MS: u64 = 120_000;

const OFFER_SIG: &[u8] = b"qvoice/v1 offer sig";
const ANSWER_SIG: &[u8] = b"qvoice/v1 answer sig";
const REVEAL_SIG: &[u8] = b"qvoice/v1 reveal sig";
const COMMIT_LABEL: &[u8] = b"qvoice/v1 commit";
const TRANSCRIPT_LABEL: &[u8] = b"qvoice/v1 transcript";
const SAS_TRANSCRIPT_LABEL: &[u8] = b"qvoice/v1 sas transcript";

/// Capability bits of OFFER and ANSWER (docs/PROTOCOL.md, "Versions and capabilities"). An OFFER lists
/// what the caller supports; the ANSWER lists what is in use (a subset of the OFFER's known bits).
pub mod caps {
    /// The seed's per-frame obfuscation layer on media payloads.
    pub const OBFUSCATION: u32 = 1 << 0;
    /// Bits 16-31: a callee that does not implement a critical bit set in an OFFER must refuse the OFFER
    /// (`incompatible`); unknown bits 0-15 are ignored.
    pub const CRITICAL: u32 = 0xffff_0000;
    /// Every bit this implementation understands.
    pub const KNOWN: u32 = OBFUSCATION;
}

/// HKDF-SHA256 `info` labels of the key schedule, one per output.
pub mod labels {
    pub const C2S_KEY: &[u8] = b"qvoice/v1 c2s key";
    pub const C2S_IV: &[u8] = b"qvoice/v1 c2s iv";
    pub const C2S_OBF: &[u8] = b"qvoice/v1 c2s obf";
    pub const S2C_KEY: &[u8] = b"qvoice/v1 s2c key";
    pub const S2C_IV: &[u8] = b"qvoice/v1 s2c iv";
    pub const S2C_OBF: &[u8] = b"qvoice/v1 s2c obf";
    pub const SAS: &[u8] = b"qvoice/v1 sas";
}

/// z-base-32, the SAS alphabet of ZRTP (RFC 6189 §5.1.6): no 0/O or l/1 confusion.
const SAS_ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

fn header(w: &mut Writer, msg: u8, call_id: &CallId) {
    w.u8(PROTOCOL_VERSION).u8(msg).bytes(call_id.as_bytes());
}

fn read_header(r: &mut Reader<'_>, msg: u8) -> Result<CallId, Error> {
    let version = r.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion(version));
    }
    if r.u8("message type")? != msg {
        return Err(Error::Malformed("unexpected handshake message type"));
    }
    Ok(CallId::from_bytes(r.array("call id")?))
}

fn check_len(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_MESSAGE_LEN { Err(Error::Malformed("handshake message too long")) } else { Ok(()) }
}

/// Splits `body ‖ signature`.
fn split_sig(raw: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    if raw.len() < SIGNATURE_LEN {
        return Err(Error::Malformed("message shorter than its signature"));
    }
    Ok(raw.split_at(raw.len() - SIGNATURE_LEN))
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Message 1, caller → callee.
#[derive(Clone, PartialEq, Eq)]
pub struct Offer {
    pub call_id: CallId,
    /// Highest protocol version the caller speaks (the OFFER itself is encoded in the lowest).
    pub max_version: u8,
    /// Capability bits the caller supports ([`caps`]).
    pub capabilities: u32,
    pub caller: Username,
    pub callee: Username,
    pub caller_key: IdentityKey,
    pub timestamp_ms: u64,
    /// The caller's receive session id (callee → caller frames carry it).
    pub session_id: SessionId,
    /// The caller's preferred frame duration.
    pub frame_ms: u8,
    /// In order of preference, each with the frame durations the caller runs it at. Codecs unknown to
    /// this implementation are left out (they were in the signed bytes).
    pub codecs: Vec<CodecOffer>,
    pub candidates: Vec<Candidate>,
    pub commit: [u8; 32],
    raw: Vec<u8>,
}

impl Offer {
    /// Parses the encoding; does not verify the signature (see [`Offer::verify`]). Fails with
    /// [`Error::UnsupportedVersion`] for another protocol version, else [`Error::Malformed`].
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        check_len(raw)?;
        let (body, _) = split_sig(raw)?;
        let mut r = Reader::new(body);
        let call_id = read_header(&mut r, MSG_OFFER)?;
        let max_version = r.u8("max version")?;
        if max_version < PROTOCOL_VERSION {
            return Err(Error::Malformed("max version below the offer's version"));
        }
        let capabilities = r.u32("capabilities")?;
        let caller = Username::parse(r.short_str("caller")?)?;
        let callee = Username::parse(r.short_str("callee")?)?;
        let caller_key = IdentityKey::from_bytes(r.bytes(32, "caller identity key")?)?;
        let timestamp_ms = r.u64("timestamp")?;
        let session_id = SessionId(r.u32("session id")?);
        let frame_ms = r.u8("frame ms")?;
        if !crate::types::FRAME_DURATIONS_MS.contains(&frame_ms) {
            return Err(Error::Malformed("frame ms must be 10, 20, 40, 60 or 64"));
        }
        let n = usize::from(r.u8("codec count")?);
        if n == 0 || n > MAX_CODECS {
            return Err(Error::Malformed("codec count must be 1..=4"));
        }
        let mut codecs: Vec<CodecOffer> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u8("codec")?;
            let bits = r.u8("codec frame durations")?;
            // An unknown codec is skipped: a newer caller may offer it next to ones we know.
            let Some(codec) = Codec::from_u8(id) else { continue };
            let durations = FrameDurations::from_bits(bits)?;
            if durations.is_empty() || !durations.is_subset(codec.protocol_durations()) {
                return Err(Error::Malformed("frame durations not defined for the codec"));
            }
            if codecs.iter().any(|c| c.codec == codec) {
                return Err(Error::Malformed("codec listed twice"));
            }
            codecs.push(CodecOffer { codec, durations });
        }
        let candidates = read_candidates(&mut r)?;
        let commit = r.array("commit")?;
        r.finish("trailing bytes after offer")?;
        Ok(Self {
            call_id,
            max_version,
            capabilities,
            caller,
            callee,
            caller_key,
            timestamp_ms,
            session_id,
            frame_ms,
            codecs,
            candidates,
            commit,
            raw: raw.to_vec(),
        })
    }

    /// Checks the caller's signature. Fails with [`Error::BadSignature`].
    pub fn verify(&self) -> Result<(), Error> {
        let (body, sig) = split_sig(&self.raw)?;
        self.caller_key.verify(&concat(&[OFFER_SIG, body]), sig)
    }

    /// Whether the caller asks for the obfuscation layer.
    pub fn obfuscation(&self) -> bool {
        self.capabilities & caps::OBFUSCATION != 0
    }

    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }
}

impl fmt::Debug for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offer")
            .field("call_id", &self.call_id)
            .field("caller", &self.caller)
            .field("callee", &self.callee)
            .field("codecs", &self.codecs)
            .finish_non_exhaustive()
    }
}

/// Message 2, callee → caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub call_id: CallId,
    /// Capability bits in use for this call (a subset of the OFFER's).
    pub capabilities: u32,
    pub callee_key: IdentityKey,
    /// The callee's receive session id (caller → callee frames carry it).
    pub session_id: SessionId,
    /// The codec the callee chose among those offered.
    pub codec: Codec,
    /// The frame duration the callee chose among those offered for `codec`.
    pub frame_ms: u8,
    pub candidates: Vec<Candidate>,
    pub eph_x25519: [u8; 32],
    pub eph_kem: Box<[u8; KEM_PUBLIC_LEN]>,
    raw: Vec<u8>,
}

impl Answer {
    /// Parses the encoding; does not verify the signature (see [`Answer::verify`]). Fails with
    /// [`Error::UnsupportedVersion`] for another protocol version, else [`Error::Malformed`].
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        check_len(raw)?;
        let (body, _) = split_sig(raw)?;
        let mut r = Reader::new(body);
        let call_id = read_header(&mut r, MSG_ANSWER)?;
        let capabilities = r.u32("capabilities")?;
        let callee_key = IdentityKey::from_bytes(r.bytes(32, "callee identity key")?)?;
        let session_id = SessionId(r.u32("session id")?);
        let codec = Codec::from_u8(r.u8("codec")?).ok_or(Error::Malformed("unknown codec"))?;
        let frame_ms = r.u8("frame ms")?;
        if !codec.protocol_durations().contains(frame_ms) {
            return Err(Error::Malformed("frame duration not defined for the codec"));
        }
        let candidates = read_candidates(&mut r)?;
        let eph_x25519 = r.array("ephemeral x25519 key")?;
        let eph_kem = Box::new(r.array::<KEM_PUBLIC_LEN>("ephemeral ML-KEM key")?);
        encapsulation_key(&eph_kem)?;
        r.finish("trailing bytes after answer")?;
        Ok(Self {
            call_id,
            capabilities,
            callee_key,
            session_id,
            codec,
            frame_ms,
            candidates,
            eph_x25519,
            eph_kem,
            raw: raw.to_vec(),
        })
    }

    /// Checks the callee's signature over `OFFER ‖ ANSWER`. Fails with [`Error::BadSignature`], or
    /// [`Error::WrongState`] when the answer belongs to another call.
    pub fn verify(&self, offer: &Offer) -> Result<(), Error> {
        if self.call_id != offer.call_id {
            return Err(Error::WrongState("answer for another call"));
        }
        let (body, sig) = split_sig(&self.raw)?;
        self.callee_key.verify(&concat(&[ANSWER_SIG, offer.to_bytes(), body]), sig)
    }

    /// Checks that every choice in the ANSWER is one the OFFER made possible: the codec was offered, the
    /// frame duration was offered for that codec, and only offered capabilities are on. Fails with
    /// [`Error::Incompatible`].
    pub fn check_choices(&self, offer: &Offer) -> Result<(), Error> {
        let Some(offered) = offer.codecs.iter().find(|c| c.codec == self.codec) else {
            return Err(Error::Incompatible("the ANSWER chose a codec that was not offered"));
        };
        if !offered.durations.contains(self.frame_ms) {
            return Err(Error::Incompatible("the ANSWER chose a frame duration that was not offered for its codec"));
        }
        if self.capabilities & !(offer.capabilities & caps::KNOWN) != 0 {
            return Err(Error::Incompatible("the ANSWER turned on a capability that was not offered"));
        }
        Ok(())
    }

    /// Whether media obfuscation is on for the call.
    pub fn obfuscation(&self) -> bool {
        self.capabilities & caps::OBFUSCATION != 0
    }

    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer").field("call_id", &self.call_id).field("codec", &self.codec).finish_non_exhaustive()
    }
}

/// Message 3, caller → callee.
#[derive(Clone, PartialEq, Eq)]
pub struct Reveal {
    pub call_id: CallId,
    pub eph_x25519: [u8; 32],
    pub prekey_id: u32,
    pub ct_pre: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    pub ct_eph: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    raw: Vec<u8>,
}

impl Reveal {
    /// Parses the encoding; does not verify anything (see [`Reveal::verify`]).
    pub fn parse(raw: &[u8]) -> Result<Self, Error> {
        check_len(raw)?;
        let (body, _) = split_sig(raw)?;
        let mut r = Reader::new(body);
        let call_id = read_header(&mut r, MSG_REVEAL)?;
        let eph_x25519 = r.array("ephemeral x25519 key")?;
        let prekey_id = r.u32("prekey id")?;
        let ct_pre = Box::new(r.array::<KEM_CIPHERTEXT_LEN>("prekey ciphertext")?);
        let ct_eph = Box::new(r.array::<KEM_CIPHERTEXT_LEN>("ephemeral ciphertext")?);
        r.finish("trailing bytes after reveal")?;
        Ok(Self { call_id, eph_x25519, prekey_id, ct_pre, ct_eph, raw: raw.to_vec() })
    }

    /// Checks the caller's signature over `OFFER ‖ ANSWER ‖ REVEAL` and the OFFER's commitment.
    /// Fails with [`Error::WrongState`], [`Error::BadSignature`] or [`Error::CommitmentMismatch`].
    pub fn verify(&self, offer: &Offer, answer: &Answer) -> Result<(), Error> {
        if self.call_id != offer.call_id || answer.call_id != offer.call_id {
            return Err(Error::WrongState("reveal for another call"));
        }
        let (body, sig) = split_sig(&self.raw)?;
        offer.caller_key.verify(&concat(&[REVEAL_SIG, offer.to_bytes(), answer.to_bytes(), body]), sig)?;
        let expected = commitment(&self.call_id, &self.eph_x25519, self.prekey_id, &self.ct_pre);
        if subtle::ConstantTimeEq::ct_eq(&expected[..], &offer.commit[..]).into() {
            Ok(())
        } else {
            Err(Error::CommitmentMismatch)
        }
    }

    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }
}

impl fmt::Debug for Reveal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reveal")
            .field("call_id", &self.call_id)
            .field("prekey_id", &self.prekey_id)
            .finish_non_exhaustive()
    }
}

/// Why a callee cannot run an OFFER. Found before answering ([`choose`]); the callee refuses the call
/// (`/call/reject` with kind `incompatible`) and sends [`Refusal`]'s text (at most 128 characters) as the
/// reason its caller shows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The OFFER is encoded in a protocol version this callee does not speak.
    #[error("the caller speaks protocol version {offered}, the callee {ours}; update qvoice", ours = PROTOCOL_VERSION)]
    Version {
        /// The OFFER's version byte.
        offered: u8,
    },
    /// The OFFER sets critical capability bits this callee does not implement.
    #[error("the call needs capabilities the callee lacks ({0:#010x}); update qvoice")]
    CriticalCapabilities(u32),
    /// None of the offered codecs is one the callee runs.
    #[error("no common codec: offered {offered}; the callee runs {supported}")]
    NoCommonCodec {
        /// Offered codec names (known ones).
        offered: String,
        /// The callee's codec names.
        supported: String,
    },
    /// A codec is common, but at no common frame duration.
    #[error("no common frame duration for {codec}: offered {offered}; the callee runs {supported}")]
    NoCommonDuration {
        /// The codec's name.
        codec: &'static str,
        /// Durations offered for it.
        offered: FrameDurations,
        /// Durations the callee runs it at.
        supported: FrameDurations,
    },
}

/// What a callee runs a call with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub codec: Codec,
    pub frame_ms: u8,
}

/// The callee's selection rule: the first codec in the OFFER's order that the callee runs at a duration
/// the OFFER lists for it; the OFFER's preferred duration if possible, else the common duration closest
/// to it (the shorter on a tie). Fails with the [`Refusal`] to send when nothing fits, or when the OFFER
/// sets critical capabilities this implementation does not know.
pub fn choose(offer: &Offer, supported: &[CodecOffer]) -> Result<Choice, Refusal> {
    let unknown_critical = offer.capabilities & caps::CRITICAL & !caps::KNOWN;
    if unknown_critical != 0 {
        return Err(Refusal::CriticalCapabilities(unknown_critical));
    }
    let mut no_duration = None;
    for offered in &offer.codecs {
        let Some(mine) = supported.iter().find(|c| c.codec == offered.codec) else { continue };
        let common = offered.durations.intersect(mine.durations);
        let frame_ms =
            if common.contains(offer.frame_ms) { Some(offer.frame_ms) } else { common.closest(offer.frame_ms) };
        match frame_ms {
            Some(frame_ms) => return Ok(Choice { codec: offered.codec, frame_ms }),
            None => {
                no_duration.get_or_insert(Refusal::NoCommonDuration {
                    codec: offered.codec.name(),
                    offered: offered.durations,
                    supported: mine.durations,
                });
            }
        }
    }
    let names = |list: &mut dyn Iterator<Item = Codec>| {
        let v: Vec<&str> = list.map(Codec::name).collect();
        if v.is_empty() { "none".to_owned() } else { v.join(", ") }
    };
    Err(no_duration.unwrap_or_else(|| Refusal::NoCommonCodec {
        offered: names(&mut offer.codecs.iter().map(|c| c.codec)),
        supported: names(&mut supported.iter().map(|c| c.codec)),
    }))
}

/// `commit = SHA-256("qvoice/v1 commit" ‖ call id ‖ caller eph X25519 ‖ prekey id ‖ ct_pre)`.
pub fn commitment(
    call_id: &CallId,
    eph_x25519: &[u8; 32],
    prekey_id: u32,
    ct_pre: &[u8; KEM_CIPHERTEXT_LEN],
) -> [u8; 32] {
    Sha256::new()
        .chain_update(COMMIT_LABEL)
        .chain_update(call_id.as_bytes())
        .chain_update(eph_x25519)
        .chain_update(prekey_id.to_be_bytes())
        .chain_update(ct_pre)
        .finalize()
        .into()
}

/// Everything the key schedule outputs.
pub struct Schedule {
    pub caller_to_callee: DirectionKeys,
    pub callee_to_caller: DirectionKeys,
    pub sas: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule(sas {})", self.sas)
    }
}

/// The key schedule, from its raw inputs (exposed for test vectors and other implementations).
///
/// Traffic keys: `HKDF-SHA256(salt = transcript_hash, ikm = dh ‖ ss_eph ‖ ss_pre)`, expanded per label.
/// SAS: `HKDF-SHA256(salt = sas_hash, ikm = dh ‖ ss_pre)` expanded with `qvoice/v1 sas`; the first 20 bits
/// as four z-base-32 characters.
pub fn key_schedule(
    dh: &[u8; 32],
    ss_eph: &[u8; 32],
    ss_pre: &[u8; 32],
    transcript_hash: &[u8; 32],
    sas_hash: &[u8; 32],
) -> Schedule {
    let ikm = Zeroizing::new([&dh[..], &ss_eph[..], &ss_pre[..]].concat());
    let hk = Hkdf::<Sha256>::new(Some(transcript_hash), &ikm);
    let dir = |key_label: &[u8], iv_label: &[u8], obf_label: &[u8]| {
        let mut k = DirectionKeys { key: [0; 32], iv: [0; 12], obf: [0; 32] };
        // Output lengths are far below HKDF's 255 * 32 byte limit, so expand cannot fail.
        let _ = hk.expand(key_label, &mut k.key);
        let _ = hk.expand(iv_label, &mut k.iv);
        let _ = hk.expand(obf_label, &mut k.obf);
        k
    };
    let caller_to_callee = dir(labels::C2S_KEY, labels::C2S_IV, labels::C2S_OBF);
    let callee_to_caller = dir(labels::S2C_KEY, labels::S2C_IV, labels::S2C_OBF);
    let sas_ikm = Zeroizing::new([&dh[..], &ss_pre[..]].concat());
    let mut sas_bytes = [0u8; 4];
    let _ = Hkdf::<Sha256>::new(Some(sas_hash), &sas_ikm).expand(labels::SAS, &mut sas_bytes);
    Schedule { caller_to_callee, callee_to_caller, sas: sas_string(&sas_bytes) }
}

fn sas_string(bytes: &[u8; 4]) -> String {
    let v = u32::from_be_bytes(*bytes) >> 12;
    (0..4).rev().map(|i| char::from(SAS_ALPHABET[((v >> (5 * i)) & 31) as usize])).collect()
}

/// `SHA-256("qvoice/v1 transcript" ‖ OFFER ‖ ANSWER ‖ REVEAL)`, whole messages as sent.
pub fn transcript_hash(offer: &Offer, answer: &Answer, reveal: &Reveal) -> [u8; 32] {
    Sha256::new()
        .chain_update(TRANSCRIPT_LABEL)
        .chain_update(offer.to_bytes())
        .chain_update(answer.to_bytes())
        .chain_update(reveal.to_bytes())
        .finalize()
        .into()
}

/// `SHA-256("qvoice/v1 sas transcript" ‖ OFFER ‖ ANSWER ‖ caller eph X25519 ‖ prekey id ‖ ct_pre)`: only
/// values fixed before the caller saw the ANSWER or committed to in the OFFER.
pub fn sas_hash(offer: &Offer, answer: &Answer, reveal: &Reveal) -> [u8; 32] {
    Sha256::new()
        .chain_update(SAS_TRANSCRIPT_LABEL)
        .chain_update(offer.to_bytes())
        .chain_update(answer.to_bytes())
        .chain_update(reveal.eph_x25519)
        .chain_update(reveal.prekey_id.to_be_bytes())
        .chain_update(&reveal.ct_pre[..])
        .finalize()
        .into()
}

/// What a finished handshake hands to the media engine and the UI.
#[derive(Debug)]
pub struct SessionKeys {
    pub role: Role,
    pub call_id: CallId,
    /// Four z-base-32 characters; equal on both sides unless someone substituted keys.
    pub sas: String,
    pub media: MediaCrypto,
    pub codec: Codec,
    pub frame_ms: u8,
    pub peer_key: IdentityKey,
    pub peer_candidates: Vec<Candidate>,
    pub transcript_hash: [u8; 32],
}

fn finish(
    role: Role,
    offer: &Offer,
    answer: &Answer,
    reveal: &Reveal,
    dh: &[u8; 32],
    ss_eph: &[u8; 32],
    ss_pre: &[u8; 32],
) -> SessionKeys {
    let th = transcript_hash(offer, answer, reveal);
    let s = key_schedule(dh, ss_eph, ss_pre, &th, &sas_hash(offer, answer, reveal));
    let obfuscation = offer.obfuscation() && answer.obfuscation();
    let (media, peer_key, peer_candidates) = match role {
        Role::Caller => (
            MediaCrypto::new(
                &s.caller_to_callee,
                &s.callee_to_caller,
                offer.session_id,
                answer.session_id,
                obfuscation,
            ),
            answer.callee_key,
            answer.candidates.clone(),
        ),
        Role::Callee => (
            MediaCrypto::new(
                &s.callee_to_caller,
                &s.caller_to_callee,
                answer.session_id,
                offer.session_id,
                obfuscation,
            ),
            offer.caller_key,
            offer.candidates.clone(),
        ),
    };
    SessionKeys {
        role,
        call_id: offer.call_id,
        sas: s.sas.clone(),
        media,
        codec: answer.codec,
        frame_ms: answer.frame_ms,
        peer_key,
        peer_candidates,
        transcript_hash: th,
    }
}

fn x25519(secret: EphemeralSecret, peer: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer));
    if !shared.was_contributory() {
        return Err(Error::InvalidKey("ephemeral X25519 key has small order"));
    }
    Ok(Zeroizing::new(*shared.as_bytes()))
}

fn shared32(key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(key);
    out
}

/// What the caller offers.
#[derive(Clone, Debug)]
pub struct CallerParams {
    pub caller: Username,
    pub callee: Username,
    /// In order of preference, each with the frame durations the caller runs it at.
    pub codecs: Vec<CodecOffer>,
    /// The preferred frame duration; must be offered for at least one codec.
    pub frame_ms: u8,
    pub candidates: Vec<Candidate>,
    pub obfuscation: bool,
}

/// The caller between OFFER and ANSWER. Holds the ephemeral X25519 secret and the prekey shared secret.
pub struct Caller {
    offer: Offer,
    callee_key: IdentityKey,
    eph: EphemeralSecret,
    eph_public: [u8; 32],
    prekey_id: u32,
    ct_pre: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    ss_pre: Zeroizing<[u8; 32]>,
    identity: IdentitySecret,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("call_id", &self.offer.call_id).finish_non_exhaustive()
    }
}

impl Caller {
    /// Starts a call to `params.callee`, whose identity key and signed prekey the caller fetched (and
    /// pinned). Fails with [`Error::BadSignature`] when the prekey is not signed by `callee_key`,
    /// [`Error::PrekeyExpired`] when it expired at `now_ms`, and [`Error::Malformed`] for codecs or a
    /// frame duration the protocol does not allow.
    pub fn start<R: CryptoRng + ?Sized>(
        rng: &mut R,
        now_ms: u64,
        identity: &IdentitySecret,
        params: CallerParams,
        callee_key: &IdentityKey,
        callee_prekey: &SignedPrekey,
    ) -> Result<(Self, Offer), Error> {
        callee_prekey.verify_at(callee_key, now_ms)?;
        if params.codecs.is_empty() || params.codecs.len() > MAX_CODECS {
            return Err(Error::Malformed("offer 1..=4 codecs"));
        }
        for (i, c) in params.codecs.iter().enumerate() {
            if c.durations.is_empty() || !c.durations.is_subset(c.codec.protocol_durations()) {
                return Err(Error::Malformed("frame durations not defined for the codec"));
            }
            if params.codecs[..i].iter().any(|o| o.codec == c.codec) {
                return Err(Error::Malformed("codec listed twice"));
            }
        }
        let frame_ms = params.frame_ms;
        if !params.codecs.iter().any(|c| c.durations.contains(frame_ms)) {
            return Err(Error::Malformed("the preferred frame duration is not offered for any codec"));
        }
        let capabilities = if params.obfuscation { caps::OBFUSCATION } else { 0 };
        let call_id = CallId::random(rng);
        let session_id = SessionId(rng.next_u32());
        let eph = EphemeralSecret::random_from_rng(rng);
        let eph_public = PublicKey::from(&eph).to_bytes();
        let ek = encapsulation_key(&callee_prekey.ek)?;
        let (ct, ss) = ek.encapsulate_with_rng(rng);
        let mut ct_pre = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
        ct_pre.copy_from_slice(ct.as_slice());
        let commit = commitment(&call_id, &eph_public, callee_prekey.id, &ct_pre);

        let mut w = Writer::default();
        header(&mut w, MSG_OFFER, &call_id);
        w.u8(PROTOCOL_VERSION)
            .u32(capabilities)
            .short_str(params.caller.as_str())
            .short_str(params.callee.as_str())
            .bytes(identity.public().as_bytes())
            .u64(now_ms)
            .u32(session_id.0)
            .u8(frame_ms)
            .u8(params.codecs.len() as u8);
        for c in &params.codecs {
            w.u8(c.codec.as_u8()).u8(c.durations.bits());
        }
        write_candidates(&mut w, &params.candidates);
        w.bytes(&commit);
        let sig = identity.sign(&concat(&[OFFER_SIG, &w.buf]));
        w.bytes(&sig);
        let offer = Offer::parse(&w.buf)?;
        let caller = Self {
            offer: offer.clone(),
            callee_key: *callee_key,
            eph,
            eph_public,
            prekey_id: callee_prekey.id,
            ct_pre,
            ss_pre: shared32(ss.as_slice()),
            identity: IdentitySecret::from_bytes(&identity.to_bytes()),
        };
        Ok((caller, offer))
    }

    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Takes the callee's ANSWER; returns the REVEAL to send and the call's keys. Fails with
    /// [`Error::BadSignature`] (not signed by the expected callee), [`Error::WrongState`] (other call),
    /// [`Error::Incompatible`] (a codec, frame duration or capability that was not offered) or
    /// [`Error::InvalidKey`].
    pub fn on_answer<R: CryptoRng + ?Sized>(
        self,
        rng: &mut R,
        answer: &Answer,
    ) -> Result<(Reveal, SessionKeys), Error> {
        if answer.callee_key != self.callee_key {
            return Err(Error::BadSignature);
        }
        answer.verify(&self.offer)?;
        answer.check_choices(&self.offer)?;
        let ek = encapsulation_key(&answer.eph_kem)?;
        let (ct, ss) = ek.encapsulate_with_rng(rng);
        let ss_eph = shared32(ss.as_slice());
        let dh = x25519(self.eph, &answer.eph_x25519)?;

        let mut w = Writer::default();
        header(&mut w, MSG_REVEAL, &self.offer.call_id);
        w.bytes(&self.eph_public).u32(self.prekey_id).bytes(&self.ct_pre[..]).bytes(ct.as_slice());
        let sig = self.identity.sign(&concat(&[REVEAL_SIG, self.offer.to_bytes(), answer.to_bytes(), &w.buf]));
        w.bytes(&sig);
        let reveal = Reveal::parse(&w.buf)?;
        let keys = finish(Role::Caller, &self.offer, answer, &reveal, &dh, &ss_eph, &self.ss_pre);
        Ok((reveal, keys))
    }
}

/// What the callee answers with.
#[derive(Clone, Debug)]
pub struct CalleeParams {
    pub callee: Username,
    /// Codecs the callee runs, each with its frame durations; [`choose`] picks among them.
    pub codecs: Vec<CodecOffer>,
    pub candidates: Vec<Candidate>,
    pub obfuscation: bool,
}

/// The callee between ANSWER and REVEAL. Holds its ephemeral X25519 and ML-KEM secrets.
pub struct Callee {
    offer: Offer,
    answer: Answer,
    eph: EphemeralSecret,
    eph_kem: DecapsulationKey,
}

impl fmt::Debug for Callee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callee").field("call_id", &self.offer.call_id).finish_non_exhaustive()
    }
}

impl Callee {
    /// Checks an OFFER (signature by `caller_key`, addressed to us, fresh, runnable by [`choose`]) and
    /// answers it. Fails with [`Error::BadSignature`], [`Error::WrongState`] or [`Error::Incompatible`]
    /// (call [`choose`] first to learn why and refuse with a reason).
    pub fn on_offer<R: CryptoRng + ?Sized>(
        rng: &mut R,
        now_ms: u64,
        identity: &IdentitySecret,
        caller_key: &IdentityKey,
        offer: &Offer,
        params: CalleeParams,
    ) -> Result<(Self, Answer), Error> {
        if offer.caller_key != *caller_key {
            return Err(Error::BadSignature);
        }
        offer.verify()?;
        if offer.callee != params.callee {
            return Err(Error::WrongState("offer addressed to another user"));
        }
        if now_ms.abs_diff(offer.timestamp_ms) > OFFER_MAX_AGE_MS {
            return Err(Error::WrongState("offer expired"));
        }
        let choice = choose(offer, &params.codecs).map_err(|_| Error::Incompatible("the OFFER cannot be run"))?;
        let capabilities = offer.capabilities & caps::KNOWN & if params.obfuscation { caps::OBFUSCATION } else { 0 };
        let session_id = SessionId(rng.next_u32());
        let eph = EphemeralSecret::random_from_rng(rng);
        let eph_public = PublicKey::from(&eph).to_bytes();
        let eph_kem = DecapsulationKey::generate_from_rng(rng);

        let mut w = Writer::default();
        header(&mut w, MSG_ANSWER, &offer.call_id);
        w.u32(capabilities)
            .bytes(identity.public().as_bytes())
            .u32(session_id.0)
            .u8(choice.codec.as_u8())
            .u8(choice.frame_ms);
        write_candidates(&mut w, &params.candidates);
        w.bytes(&eph_public).bytes(eph_kem.encapsulation_key().to_bytes().as_slice());
        let sig = identity.sign(&concat(&[ANSWER_SIG, offer.to_bytes(), &w.buf]));
        w.bytes(&sig);
        let answer = Answer::parse(&w.buf)?;
        Ok((Self { offer: offer.clone(), answer: answer.clone(), eph, eph_kem }, answer))
    }

    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Checks the REVEAL (signature, commitment) before deriving anything, then derives the call keys.
    /// `prekeys` are the callee's current and recently rotated prekeys. Fails with [`Error::WrongState`]
    /// (other call, unknown prekey), [`Error::BadSignature`], [`Error::CommitmentMismatch`] or
    /// [`Error::InvalidKey`].
    pub fn on_reveal(self, reveal: &Reveal, prekeys: &[PrekeySecret]) -> Result<SessionKeys, Error> {
        reveal.verify(&self.offer, &self.answer)?;
        let prekey = prekeys
            .iter()
            .find(|p| p.id() == reveal.prekey_id)
            .ok_or(Error::WrongState("REVEAL uses an unknown prekey id"))?;
        let ct_pre = Ciphertext::from(*reveal.ct_pre);
        let ss_pre = shared32(prekey.decapsulation_key().decapsulate(&ct_pre).as_slice());
        let ct_eph = Ciphertext::from(*reveal.ct_eph);
        let ss_eph = shared32(self.eph_kem.decapsulate(&ct_eph).as_slice());
        let dh = x25519(self.eph, &reveal.eph_x25519)?;
        Ok(finish(Role::Callee, &self.offer, &self.answer, reveal, &dh, &ss_eph, &ss_pre))
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
