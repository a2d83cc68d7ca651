//! Fixtures shared by the fuzz targets: fixed media keys and one genuine handshake (OFFER, ANSWER,
//! REVEAL, signed prekey) built from a seeded RNG, so every run and every reproducer sees the same bytes.
//!
//! Harness code, like test code, may `expect`: a failure here is a broken fixture, not a finding.

use std::sync::OnceLock;

use qvoice_proto::handshake::{Answer, Callee, CalleeParams, Caller, CallerParams, Offer, Reveal};
use qvoice_proto::media::DirectionKeys;
use qvoice_proto::{
    Candidate, Codec, IdentityKey, IdentitySecret, MediaCrypto, PrekeySecret, SessionId, SignedPrekey, Username,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Session id the receiver of [`media_pair`] expects in frame headers.
pub const RECV_SESSION: SessionId = SessionId(0x2222_2222);
/// Session id of the other side.
pub const SEND_SESSION: SessionId = SessionId(0x1111_1111);

/// Fixed, distinct keys per direction (like `media.rs`'s own tests).
pub fn direction_keys(seed: u8) -> DirectionKeys {
    DirectionKeys { key: [seed; 32], iv: [seed.wrapping_add(1); 12], obf: [seed.wrapping_add(2); 32] }
}

/// `(sender, receiver)` wired like a finished handshake: the sender's send keys are the receiver's
/// receive keys, and the sender addresses frames to [`RECV_SESSION`].
pub fn media_pair(obfuscate: bool) -> (MediaCrypto, MediaCrypto) {
    let (fwd, back) = (direction_keys(1), direction_keys(7));
    let sender = MediaCrypto::new(&fwd, &back, SEND_SESSION, RECV_SESSION, obfuscate);
    let receiver = MediaCrypto::new(&back, &fwd, RECV_SESSION, SEND_SESSION, obfuscate);
    (sender, receiver)
}

/// One genuine call setup between `alice` (caller) and `bob` (callee).
#[derive(Debug)]
pub struct Handshake {
    pub offer: Offer,
    pub answer: Answer,
    pub reveal: Reveal,
    /// Bob's signed prekey, as the registry serves it.
    pub prekey: SignedPrekey,
    pub caller_key: IdentityKey,
    pub callee_key: IdentityKey,
}

const NOW_MS: u64 = 1_790_000_000_000;

/// Built once per process (the ML-KEM and Ed25519 work would dominate every execution otherwise).
pub fn handshake() -> &'static Handshake {
    static FIXTURE: OnceLock<Handshake> = OnceLock::new();
    FIXTURE.get_or_init(build_handshake)
}

fn build_handshake() -> Handshake {
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed);
    let alice = IdentitySecret::generate(&mut rng);
    let bob = IdentitySecret::generate(&mut rng);
    let bob_prekey = PrekeySecret::generate(&mut rng, 1);
    let prekey = bob_prekey.sign(&bob, NOW_MS + qvoice_proto::PREKEY_LIFETIME_MS);
    let name = |s: &str| Username::parse(s).expect("fixture username");
    let cand = |s: &str| Candidate::host(s.parse().expect("fixture candidate"));
    let caller_params = CallerParams {
        caller: name("alice"),
        callee: name("bob"),
        codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
        frame_ms: 20,
        candidates: vec![cand("192.0.2.1:4000"), cand("[2001:db8::1]:4001")],
        obfuscation: true,
    };
    let (caller, offer) =
        Caller::start(&mut rng, NOW_MS, &alice, caller_params, &bob.public(), &prekey).expect("fixture offer");
    let callee_params = CalleeParams {
        callee: name("bob"),
        codecs: vec![Codec::Opus.into()],
        candidates: vec![cand("198.51.100.7:5000")],
        obfuscation: true,
    };
    let (callee, answer) =
        Callee::on_offer(&mut rng, NOW_MS, &bob, &alice.public(), &offer, callee_params).expect("fixture answer");
    let (reveal, _) = caller.on_answer(&mut rng, &answer).expect("fixture reveal");
    callee.on_reveal(&reveal, std::slice::from_ref(&bob_prekey)).expect("fixture handshake completes");
    Handshake { offer, answer, reveal, prekey, caller_key: alice.public(), callee_key: bob.public() }
}

/// Reads fuzz input as a little command stream; runs dry as zeros so every input is usable.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Applies up to `max` `(position u16, xor u8)` edits from `cur` to `buf` (fewer when input runs out).
/// Callers compare with the original to know whether anything changed.
pub fn xor_edits(cur: &mut Cursor<'_>, buf: &mut [u8], max: usize) {
    for _ in 0..max {
        if cur.is_empty() || buf.is_empty() {
            return;
        }
        let at = usize::from(cur.u16()) % buf.len();
        buf[at] ^= cur.u8();
    }
}

/// One genuine file transfer from `alice` to `bob`: the signed manifest, the chunk keys and the sealed
/// chunks of a 2600-byte file in 1024-byte chunks (three chunks, the last one short).
#[derive(Debug)]
pub struct FileTransfer {
    pub manifest: qvoice_proto::file::Manifest,
    pub keys: qvoice_proto::file::FileKeys,
    pub meta: qvoice_proto::file::FileMeta,
    pub chunks: Vec<Vec<u8>>,
    pub plaintext: Vec<u8>,
    /// Bob's secrets, to open the manifest.
    pub bob: IdentitySecret,
    pub bob_prekey: PrekeySecret,
}

/// Built once per process, like [`handshake`].
pub fn file_transfer() -> &'static FileTransfer {
    static FIXTURE: OnceLock<FileTransfer> = OnceLock::new();
    FIXTURE.get_or_init(build_file_transfer)
}

fn build_file_transfer() -> FileTransfer {
    use qvoice_proto::file::{FileMeta, SealParams, seal_manifest};
    let mut rng = ChaCha20Rng::seed_from_u64(0xf11e);
    let alice = IdentitySecret::generate(&mut rng);
    let bob = IdentitySecret::generate(&mut rng);
    let bob_prekey = PrekeySecret::generate(&mut rng, 1);
    let prekey = bob_prekey.sign(&bob, NOW_MS + qvoice_proto::PREKEY_LIFETIME_MS);
    let plaintext: Vec<u8> = (0..2600u32).map(|i| (i % 251) as u8).collect();
    let meta = FileMeta { name: "fuzz.bin".to_owned(), sha256: sha256(&plaintext) };
    let name = |s: &str| Username::parse(s).expect("fixture username");
    let params = SealParams {
        sender: &name("alice"),
        recipient: &name("bob"),
        recipient_key: &bob.public(),
        recipient_prekey: &prekey,
        meta: &meta,
        size: plaintext.len() as u64,
        chunk_size: 1024,
    };
    let (manifest, keys) = seal_manifest(&mut rng, NOW_MS, &alice, &params).expect("fixture manifest");
    let cipher = keys.cipher(&manifest);
    let chunks = plaintext
        .chunks(1024)
        .enumerate()
        .map(|(i, p)| {
            let mut out = Vec::new();
            cipher.seal(i as u32, p, &mut out).expect("fixture chunk");
            out
        })
        .collect();
    FileTransfer { manifest, keys, meta, chunks, plaintext, bob, bob_prekey }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}
