//! Encrypted file transfer, store and forward through the registry: the signed manifest, the one-way
//! hybrid key encapsulation to the recipient, and the chunked AEAD (the STREAM construction over
//! AES-256-GCM). Sans-IO like the rest of the crate: bytes in, bytes out, randomness and time are
//! arguments; the client reads and writes files, the registry stores opaque chunks.
//!
//! ```text
//! sender                                   registry                      recipient (maybe offline)
//!   manifest (signed; KEM ct; sealed name) ─▶ checks sender, sizes, quota
//!   chunk 0..n-1 (AES-256-GCM)             ─▶ stores ciphertext only ─▶ incoming_file ─▶ verifies, opens
//! ```
//!
//! Keys: the recipient's published prekey is ML-KEM-768 only, so the classical half of the hybrid is an
//! X25519 exchange between a fresh ephemeral key and the recipient's identity key in Montgomery form
//! (as age does for `ssh-ed25519` recipients; the joint security of Ed25519 and X25519 on one key pair is
//! proven in eprint 2021/509). X-Wing would need its own published X25519 + ML-KEM key pair; this needs
//! no new key material and no registry change. The two secrets are combined with HKDF-SHA256 under a salt
//! that hashes both identities, the file id and every public value of the exchange (X-Wing's combiner
//! binds the X25519 ciphertext and public key the same way), with the call key schedule's labels style.
//!
//! Chunks: chunk `i` of `n` is sealed under `nonce = prefix (7) ‖ i (u32) ‖ last (u8: 1 for i = n-1)`
//! with the manifest hash as associated data, so a reordered, swapped, dropped, appended or foreign chunk
//! fails to open; the manifest (signed) fixes `n` and the size, and the SHA-256 of the whole plaintext,
//! sealed inside the manifest with the file name, is checked after the last chunk.

use std::fmt;

use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate as _, Encapsulate as _};
use ml_kem::ml_kem_768::Ciphertext;
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::identity::{KEM_CIPHERTEXT_LEN, SIGNATURE_LEN, encapsulation_key};
use crate::types::to_hex;
use crate::{Error, IdentityKey, IdentitySecret, PrekeySecret, SignedPrekey, Username};

/// Version byte of the manifest encoding.
pub const MANIFEST_VERSION: u8 = 1;
/// Type byte of a manifest (handshake messages use 1-3).
pub const MANIFEST_TYPE: u8 = 16;
/// A file id is 128 random bits chosen by the sender.
pub const FILE_ID_LEN: usize = 16;
/// Smallest chunk a manifest may declare.
pub const MIN_CHUNK_SIZE: u32 = 1024;
/// Largest chunk a manifest may declare (bounds memory per chunk on both ends and the registry's body size).
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// What senders use: 1 MiB, so a 100 MiB file is 100 requests and resumes lose at most 1 MiB.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// AES-GCM tag appended to every chunk and to the sealed metadata.
pub const TAG_LEN: usize = 16;
/// Longest file name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Plaintext of the sealed metadata: `sha256 (32) ‖ name length (u8) ‖ name, zero-padded to 255 bytes`.
/// Fixed size, so the manifest does not reveal the name's length.
pub const META_LEN: usize = 32 + 1 + MAX_NAME_LEN;
/// Sealed metadata in the manifest.
pub const SEALED_META_LEN: usize = META_LEN + TAG_LEN;
/// Nonce bytes derived per file; the other 5 are the chunk index and the last-chunk flag.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Longest manifest (two 32-byte usernames).
pub const MAX_MANIFEST_LEN: usize =
    2 + FILE_ID_LEN + 2 * (1 + 32 + 32) + 8 + 8 + 4 + 4 + 4 + 32 + KEM_CIPHERTEXT_LEN + SEALED_META_LEN + SIGNATURE_LEN;
/// Length of [`FileKeys::to_bytes`].
pub const FILE_KEYS_LEN: usize = 32 + NONCE_PREFIX_LEN;

const MANIFEST_SIG: &[u8] = b"qvoice/v1 file manifest sig";
const CONTEXT_LABEL: &[u8] = b"qvoice/v1 file context";
const MANIFEST_HASH_LABEL: &[u8] = b"qvoice/v1 file manifest";
const META_AAD_LABEL: &[u8] = b"qvoice/v1 file meta";

/// HKDF-SHA256 `info` labels of the file key schedule.
pub mod labels {
    pub const FILE_KEY: &[u8] = b"qvoice/v1 file key";
    pub const FILE_NONCE: &[u8] = b"qvoice/v1 file nonce";
    pub const META_KEY: &[u8] = b"qvoice/v1 file meta key";
}

/// Why a file operation failed. The text says what happened in a user's words; the client adds what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// The manifest bytes do not have the documented layout (the text says which field).
    #[error("malformed file manifest: {0}")]
    Malformed(&'static str),
    /// The manifest's Ed25519 signature does not verify against its sender key.
    #[error("the file's manifest is not signed by the sender's identity key")]
    BadSignature,
    /// The manifest names another recipient or another identity key for us.
    #[error("the file is addressed to another user or to another identity key")]
    WrongRecipient,
    /// The sender encapsulated to a prekey we no longer hold (rotated out).
    #[error("the file was encrypted to prekey {0}, which this identity no longer holds")]
    UnknownPrekey(u32),
    /// A key or key share is invalid (bad point, small-order X25519 share, bad signature on the prekey).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// The sealed name and checksum do not open: the manifest was changed or is not for our keys.
    #[error("the file's sealed name and checksum do not decrypt: tampered manifest or wrong keys")]
    MetaTagFailure,
    /// A chunk did not authenticate.
    #[error("chunk {index} does not authenticate: it was tampered with, swapped or belongs to another file")]
    ChunkTagFailure { index: u32 },
    /// A chunk has the wrong length for its position.
    #[error("chunk {index} has {got} bytes; the manifest says {expected}")]
    ChunkLength { index: u32, got: usize, expected: usize },
    /// A chunk index beyond the manifest's count.
    #[error("chunk index {index} is beyond the file's {count} chunks")]
    ChunkIndex { index: u32, count: u32 },
    /// Chunks were fed out of order to a [`StreamOpener`].
    #[error("expected chunk {expected}, got chunk {got}")]
    OutOfOrder { expected: u32, got: u32 },
    /// The stream ended early.
    #[error("the file ended after {got} of {count} chunks")]
    Truncated { got: u32, count: u32 },
    /// Every chunk opened but the plaintext's SHA-256 differs from the signed one.
    #[error("the decrypted file does not match the SHA-256 its sender signed")]
    HashMismatch,
    /// The sender's file name is empty or longer than 255 bytes.
    #[error("file name must be 1-255 bytes of UTF-8")]
    InvalidName,
    /// The declared size or chunk size is out of range.
    #[error("invalid file size: {0}")]
    InvalidSize(&'static str),
    /// The recipient's signed prekey expired (Unix ms): its owner has not published a fresh one.
    #[error(
        "the recipient's prekey expired at {expires_ms} (Unix ms); they need to run qvoice once to publish a new one"
    )]
    PrekeyExpired {
        /// When it expired.
        expires_ms: u64,
    },
}

impl From<Error> for FileError {
    fn from(e: Error) -> Self {
        match e {
            Error::BadSignature => Self::BadSignature,
            Error::InvalidKey(what) => Self::InvalidKey(what),
            Error::InvalidUsername => Self::Malformed("invalid username"),
            Error::Malformed(what) => Self::Malformed(what),
            Error::PrekeyExpired { expires_ms } => Self::PrekeyExpired { expires_ms },
            _ => Self::Malformed("unexpected protocol error"),
        }
    }
}

/// A file identifier: 128 random bits chosen by the sender; 32 lowercase hex digits in URLs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId([u8; FILE_ID_LEN]);

impl FileId {
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; FILE_ID_LEN];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    pub fn from_bytes(bytes: [u8; FILE_ID_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; FILE_ID_LEN] {
        &self.0
    }

    /// Parses exactly 32 lowercase hex digits (the only spelling the registry and clients produce, so
    /// one file has one URL). Fails with [`FileError::Malformed`].
    pub fn from_hex(s: &str) -> Result<Self, FileError> {
        const BAD: FileError = FileError::Malformed("file id must be 32 lowercase hex digits");
        let b = s.as_bytes();
        if b.len() != 2 * FILE_ID_LEN {
            return Err(BAD);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(BAD),
        };
        let mut out = [0u8; FILE_ID_LEN];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            *o = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({})", self.to_hex())
    }
}

/// Number of chunks of a `size`-byte file cut into `chunk_size` pieces; an empty file is one empty chunk.
pub fn chunk_count(size: u64, chunk_size: u32) -> Option<u32> {
    if chunk_size == 0 {
        return None;
    }
    u32::try_from(size.div_ceil(u64::from(chunk_size)).max(1)).ok()
}

/// The signed description of one transfer. Everything but the name and checksum is public: the registry
/// reads sender, recipient and sizes to authorise, route and account for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    pub file_id: FileId,
    pub sender: Username,
    pub sender_key: IdentityKey,
    pub recipient: Username,
    pub recipient_key: IdentityKey,
    /// Sender's clock (Unix ms) when the transfer was created.
    pub created_ms: u64,
    /// Plaintext size in bytes.
    pub size: u64,
    pub chunk_size: u32,
    pub chunk_count: u32,
    /// Id of the recipient's signed prekey the sender encapsulated to.
    pub prekey_id: u32,
    /// The sender's ephemeral X25519 public key.
    pub eph_x25519: [u8; 32],
    /// ML-KEM-768 ciphertext to the recipient's prekey.
    pub ct_pre: Box<[u8; KEM_CIPHERTEXT_LEN]>,
    /// AES-256-GCM of the name and the plaintext's SHA-256 under the meta key.
    pub sealed_meta: Box<[u8; SEALED_META_LEN]>,
    raw: Vec<u8>,
}

impl Manifest {
    /// Parses and range-checks the encoding (sizes, chunk count, keys); does not verify the signature
    /// (see [`Manifest::verify`]). Fails with [`FileError::Malformed`], [`FileError::InvalidKey`] or
    /// [`FileError::InvalidSize`].
    pub fn parse(raw: &[u8]) -> Result<Self, FileError> {
        if raw.len() > MAX_MANIFEST_LEN {
            return Err(FileError::Malformed("manifest too long"));
        }
        if raw.len() < SIGNATURE_LEN {
            return Err(FileError::Malformed("manifest shorter than its signature"));
        }
        let body = &raw[..raw.len() - SIGNATURE_LEN];
        let mut r = Reader::new(body);
        if r.u8("version")? != MANIFEST_VERSION {
            return Err(FileError::Malformed("unsupported manifest version"));
        }
        if r.u8("type")? != MANIFEST_TYPE {
            return Err(FileError::Malformed("not a file manifest"));
        }
        let file_id = FileId(r.array("file id")?);
        let sender = Username::parse(r.short_str("sender")?)?;
        let sender_key = IdentityKey::from_bytes(r.bytes(32, "sender identity key")?)?;
        let recipient = Username::parse(r.short_str("recipient")?)?;
        let recipient_key = IdentityKey::from_bytes(r.bytes(32, "recipient identity key")?)?;
        let created_ms = r.u64("created")?;
        let size = r.u64("size")?;
        let chunk_size = r.u32("chunk size")?;
        let count = r.u32("chunk count")?;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(FileError::InvalidSize("chunk size must be 1 KiB to 1 MiB"));
        }
        if chunk_count(size, chunk_size) != Some(count) {
            return Err(FileError::InvalidSize("chunk count does not match size and chunk size"));
        }
        let prekey_id = r.u32("prekey id")?;
        let eph_x25519 = r.array("ephemeral x25519 key")?;
        let ct_pre = Box::new(r.array::<KEM_CIPHERTEXT_LEN>("prekey ciphertext")?);
        let sealed_meta = Box::new(r.array::<SEALED_META_LEN>("sealed metadata")?);
        r.finish("trailing bytes after manifest")?;
        Ok(Self {
            file_id,
            sender,
            sender_key,
            recipient,
            recipient_key,
            created_ms,
            size,
            chunk_size,
            chunk_count: count,
            prekey_id,
            eph_x25519,
            ct_pre,
            sealed_meta,
            raw: raw.to_vec(),
        })
    }

    /// Checks the sender's signature. Whether `sender_key` is the right key for `sender` is the caller's
    /// check (the registry: the registered key; the recipient: the pinned key). Fails with
    /// [`FileError::BadSignature`].
    pub fn verify(&self) -> Result<(), FileError> {
        let (body, sig) = self.raw.split_at(self.raw.len() - SIGNATURE_LEN);
        Ok(self.sender_key.verify(&[MANIFEST_SIG, body].concat(), sig)?)
    }

    pub fn to_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// `SHA-256("qvoice/v1 file manifest" ‖ manifest)`: every chunk's associated data.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::new().chain_update(MANIFEST_HASH_LABEL).chain_update(&self.raw).finalize().into()
    }

    /// Plaintext bytes of chunk `index` (`None` past the end).
    pub fn chunk_plain_len(&self, index: u32) -> Option<usize> {
        if index >= self.chunk_count {
            return None;
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let len = self.size.saturating_sub(start).min(u64::from(self.chunk_size));
        usize::try_from(len).ok()
    }

    /// Stored (ciphertext) bytes of chunk `index`: plaintext plus the 16-byte tag.
    pub fn chunk_wire_len(&self, index: u32) -> Option<usize> {
        self.chunk_plain_len(index).map(|n| n + TAG_LEN)
    }

    /// All stored bytes of the file: what the registry accounts against quotas.
    pub fn wire_size(&self) -> u64 {
        self.size.saturating_add(u64::from(self.chunk_count) * TAG_LEN as u64)
    }

    /// The bytes the sealed metadata authenticates: the label and everything before it in the manifest.
    fn meta_aad(&self) -> Vec<u8> {
        let head = self.raw.len() - SIGNATURE_LEN - SEALED_META_LEN;
        [META_AAD_LABEL, &self.raw[..head]].concat()
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("file_id", &self.file_id)
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("size", &self.size)
            .field("chunk_count", &self.chunk_count)
            .finish_non_exhaustive()
    }
}

/// What only the recipient learns from the manifest: the sender's file name and the plaintext's SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// As the sender wrote it: 1-255 bytes of UTF-8, not sanitised (the receiving client must).
    pub name: String,
    pub sha256: [u8; 32],
}

impl FileMeta {
    fn encode(&self) -> Result<Zeroizing<[u8; META_LEN]>, FileError> {
        let name = self.name.as_bytes();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(FileError::InvalidName);
        }
        let mut out = Zeroizing::new([0u8; META_LEN]);
        out[..32].copy_from_slice(&self.sha256);
        out[32] = name.len() as u8;
        out[33..33 + name.len()].copy_from_slice(name);
        Ok(out)
    }

    fn decode(plain: &[u8; META_LEN]) -> Result<Self, FileError> {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&plain[..32]);
        let len = usize::from(plain[32]);
        let (name, pad) = plain[33..].split_at(len);
        if len == 0 || pad.iter().any(|&b| b != 0) {
            return Err(FileError::Malformed("sealed metadata: bad name length or padding"));
        }
        let name = std::str::from_utf8(name).map_err(|_| FileError::Malformed("file name is not UTF-8"))?;
        Ok(Self { name: name.to_owned(), sha256 })
    }
}

impl fmt::Debug for FileMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The name is private: it stays out of logs.
        write!(f, "FileMeta({} byte name)", self.name.len())
    }
}

/// The file's symmetric secrets: the chunk key and nonce prefix. The sender keeps them (0600) while an
/// upload may resume; the recipient derives them from the manifest.
pub struct FileKeys {
    key: Zeroizing<[u8; 32]>,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl FileKeys {
    /// `key ‖ nonce_prefix`, for the sender's resume record.
    pub fn to_bytes(&self) -> Zeroizing<[u8; FILE_KEYS_LEN]> {
        let mut out = Zeroizing::new([0u8; FILE_KEYS_LEN]);
        out[..32].copy_from_slice(&self.key[..]);
        out[32..].copy_from_slice(&self.nonce_prefix);
        out
    }

    /// Fails with [`FileError::InvalidKey`] on a wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FileError> {
        if bytes.len() != FILE_KEYS_LEN {
            return Err(FileError::InvalidKey("file keys must be 39 bytes"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes[..32]);
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&bytes[32..]);
        Ok(Self { key, nonce_prefix })
    }

    /// The chunk cipher of `manifest`'s file.
    pub fn cipher(&self, manifest: &Manifest) -> ChunkCipher {
        ChunkCipher {
            aead: Aes256Gcm::new(&(*self.key).into()),
            nonce_prefix: self.nonce_prefix,
            aad: manifest.hash(),
            manifest_size: manifest.size,
            chunk_size: manifest.chunk_size,
            chunk_count: manifest.chunk_count,
        }
    }
}

impl fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKeys(..)")
    }
}

/// Everything the key schedule outputs (exposed for the test vectors and other implementations).
pub struct FileSchedule {
    pub keys: FileKeys,
    pub meta_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for FileSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileSchedule(..)")
    }
}

/// The file key schedule from its raw inputs:
/// `PRK = HKDF-Extract(salt = context, ikm = dh ‖ ss_pre)`, then one expansion per label.
pub fn file_key_schedule(dh: &[u8; 32], ss_pre: &[u8; 32], context: &[u8; 32]) -> FileSchedule {
    let ikm = Zeroizing::new([&dh[..], &ss_pre[..]].concat());
    let hk = Hkdf::<Sha256>::new(Some(context), &ikm);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    let mut meta_key = Zeroizing::new([0u8; 32]);
    // Output lengths are far below HKDF's limit, so expand cannot fail.
    let _ = hk.expand(labels::FILE_KEY, &mut key[..]);
    let _ = hk.expand(labels::FILE_NONCE, &mut nonce_prefix);
    let _ = hk.expand(labels::META_KEY, &mut meta_key[..]);
    FileSchedule { keys: FileKeys { key, nonce_prefix }, meta_key }
}

/// The key schedule's salt: `SHA-256("qvoice/v1 file context" ‖ file_id ‖ sender ‖ sender_key ‖
/// recipient ‖ recipient_key ‖ prekey_id ‖ eph_x25519 ‖ recipient_x25519 ‖ ct_pre)`, names as `str8`.
pub fn file_context(m: &Manifest) -> [u8; 32] {
    context_hash(
        &m.file_id,
        &m.sender,
        &m.sender_key,
        &m.recipient,
        &m.recipient_key,
        m.prekey_id,
        &m.eph_x25519,
        &m.ct_pre,
    )
}

#[allow(clippy::too_many_arguments)]
fn context_hash(
    file_id: &FileId,
    sender: &Username,
    sender_key: &IdentityKey,
    recipient: &Username,
    recipient_key: &IdentityKey,
    prekey_id: u32,
    eph_x25519: &[u8; 32],
    ct_pre: &[u8; KEM_CIPHERTEXT_LEN],
) -> [u8; 32] {
    let mut w = Writer::default();
    w.bytes(CONTEXT_LABEL)
        .bytes(file_id.as_bytes())
        .short_str(sender.as_str())
        .bytes(sender_key.as_bytes())
        .short_str(recipient.as_str())
        .bytes(recipient_key.as_bytes())
        .u32(prekey_id)
        .bytes(eph_x25519)
        .bytes(&recipient_key.to_x25519())
        .bytes(ct_pre);
    Sha256::digest(&w.buf).into()
}

fn meta_nonce() -> Nonce<aes_gcm::aead::consts::U12> {
    [0u8; 12].into()
}

/// What a sender provides for one transfer.
#[derive(Debug)]
pub struct SealParams<'a> {
    pub sender: &'a Username,
    pub recipient: &'a Username,
    /// The recipient's identity key, pinned (TOFU) or verified by the caller.
    pub recipient_key: &'a IdentityKey,
    /// The recipient's current signed prekey as fetched; its signature is checked here.
    pub recipient_prekey: &'a SignedPrekey,
    pub meta: &'a FileMeta,
    pub size: u64,
    pub chunk_size: u32,
}

/// Creates a transfer: a fresh file id, the hybrid encapsulation to the recipient, the sealed metadata and
/// the sender's signature. Returns the manifest and the chunk keys. Fails with [`FileError::BadSignature`]
/// (prekey not signed by `recipient_key`), [`FileError::PrekeyExpired`] (at `now_ms`),
/// [`FileError::InvalidName`], [`FileError::InvalidSize`] or [`FileError::InvalidKey`].
pub fn seal_manifest<R: CryptoRng + ?Sized>(
    rng: &mut R,
    now_ms: u64,
    identity: &IdentitySecret,
    p: &SealParams<'_>,
) -> Result<(Manifest, FileKeys), FileError> {
    p.recipient_prekey.verify_at(p.recipient_key, now_ms)?;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&p.chunk_size) {
        return Err(FileError::InvalidSize("chunk size must be 1 KiB to 1 MiB"));
    }
    let count = chunk_count(p.size, p.chunk_size).ok_or(FileError::InvalidSize("too many chunks"))?;
    let meta_plain = p.meta.encode()?;
    let file_id = FileId::random(rng);
    let eph = EphemeralSecret::random_from_rng(rng);
    let eph_public = PublicKey::from(&eph).to_bytes();
    let recipient_x = PublicKey::from(p.recipient_key.to_x25519());
    let shared = eph.diffie_hellman(&recipient_x);
    if !shared.was_contributory() {
        return Err(FileError::InvalidKey("recipient identity key has small order"));
    }
    let dh = Zeroizing::new(*shared.as_bytes());
    let (ct, ss) = encapsulation_key(&p.recipient_prekey.ek)?.encapsulate_with_rng(rng);
    let mut ct_pre = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
    ct_pre.copy_from_slice(ct.as_slice());
    let mut ss_pre = Zeroizing::new([0u8; 32]);
    ss_pre.copy_from_slice(ss.as_slice());

    let sender_key = identity.public();
    let context = context_hash(
        &file_id,
        p.sender,
        &sender_key,
        p.recipient,
        p.recipient_key,
        p.recipient_prekey.id,
        &eph_public,
        &ct_pre,
    );
    let schedule = file_key_schedule(&dh, &ss_pre, &context);

    let mut w = Writer::default();
    w.u8(MANIFEST_VERSION)
        .u8(MANIFEST_TYPE)
        .bytes(file_id.as_bytes())
        .short_str(p.sender.as_str())
        .bytes(sender_key.as_bytes())
        .short_str(p.recipient.as_str())
        .bytes(p.recipient_key.as_bytes())
        .u64(now_ms)
        .u64(p.size)
        .u32(p.chunk_size)
        .u32(count)
        .u32(p.recipient_prekey.id)
        .bytes(&eph_public)
        .bytes(&ct_pre[..]);
    let aad = [META_AAD_LABEL, &w.buf].concat();
    let mut sealed = *meta_plain;
    let tag = Aes256Gcm::new(&(*schedule.meta_key).into())
        .encrypt_inout_detached(&meta_nonce(), &aad, (&mut sealed[..]).into())
        .map_err(|_| FileError::InvalidSize("metadata too long"))?;
    w.bytes(&sealed).bytes(tag.as_slice());
    let sig = identity.sign(&[MANIFEST_SIG, &w.buf].concat());
    w.bytes(&sig);
    let manifest = Manifest::parse(&w.buf)?;
    Ok((manifest, schedule.keys))
}

/// The recipient's side of the key exchange: checks that the manifest is signed by its `sender_key` and
/// addressed to `me` with our identity key, decapsulates with the prekey it names, and opens the name and
/// checksum. Whether `sender_key` is the sender's pinned key is the caller's check (TOFU, like calls).
/// Fails with [`FileError::BadSignature`], [`FileError::WrongRecipient`], [`FileError::UnknownPrekey`],
/// [`FileError::InvalidKey`], [`FileError::MetaTagFailure`] or [`FileError::Malformed`].
pub fn open_manifest(
    manifest: &Manifest,
    identity: &IdentitySecret,
    me: &Username,
    prekeys: &[PrekeySecret],
) -> Result<(FileMeta, FileKeys), FileError> {
    manifest.verify()?;
    if manifest.recipient != *me || manifest.recipient_key != identity.public() {
        return Err(FileError::WrongRecipient);
    }
    let prekey =
        prekeys.iter().find(|p| p.id() == manifest.prekey_id).ok_or(FileError::UnknownPrekey(manifest.prekey_id))?;
    let ss = prekey.decapsulation_key().decapsulate(&Ciphertext::from(*manifest.ct_pre));
    let mut ss_pre = Zeroizing::new([0u8; 32]);
    ss_pre.copy_from_slice(ss.as_slice());
    let dh = Zeroizing::new(x25519_dalek::x25519(*identity.x25519_scalar(), manifest.eph_x25519));
    if dh.iter().all(|&b| b == 0) {
        return Err(FileError::InvalidKey("sender's ephemeral X25519 key has small order"));
    }
    let schedule = file_key_schedule(&dh, &ss_pre, &file_context(manifest));
    let mut plain = Zeroizing::new([0u8; META_LEN]);
    plain.copy_from_slice(&manifest.sealed_meta[..META_LEN]);
    let tag = Tag::try_from(&manifest.sealed_meta[META_LEN..]).map_err(|_| FileError::MetaTagFailure)?;
    Aes256Gcm::new(&(*schedule.meta_key).into())
        .decrypt_inout_detached(&meta_nonce(), &manifest.meta_aad(), (&mut plain[..]).into(), &tag)
        .map_err(|_| FileError::MetaTagFailure)?;
    Ok((FileMeta::decode(&plain)?, schedule.keys))
}

/// Seals and opens the chunks of one file (random access: uploads resume at any index).
pub struct ChunkCipher {
    aead: Aes256Gcm,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    aad: [u8; 32],
    manifest_size: u64,
    chunk_size: u32,
    chunk_count: u32,
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkCipher({} chunks)", self.chunk_count)
    }
}

impl ChunkCipher {
    /// `prefix ‖ index ‖ last`.
    pub fn nonce(&self, index: u32) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(index + 1 == self.chunk_count);
        n
    }

    fn plain_len(&self, index: u32) -> Result<usize, FileError> {
        if index >= self.chunk_count {
            return Err(FileError::ChunkIndex { index, count: self.chunk_count });
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let len = self.manifest_size.saturating_sub(start).min(u64::from(self.chunk_size));
        usize::try_from(len).map_err(|_| FileError::InvalidSize("chunk larger than memory"))
    }

    /// Seals chunk `index` into `out` (cleared first): `ciphertext ‖ tag`. Fails with
    /// [`FileError::ChunkIndex`] or [`FileError::ChunkLength`] when `plaintext` is not exactly the
    /// chunk the manifest declares.
    pub fn seal(&self, index: u32, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), FileError> {
        let expected = self.plain_len(index)?;
        if plaintext.len() != expected {
            return Err(FileError::ChunkLength { index, got: plaintext.len(), expected });
        }
        out.clear();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .encrypt_inout_detached(&self.nonce(index).into(), &self.aad, out.as_mut_slice().into())
            .map_err(|_| FileError::InvalidSize("chunk too long for AES-GCM"))?;
        out.extend_from_slice(tag.as_slice());
        Ok(())
    }

    /// Authenticates and decrypts chunk `index` into `out` (cleared first; left empty on failure). Fails
    /// with [`FileError::ChunkIndex`], [`FileError::ChunkLength`] or [`FileError::ChunkTagFailure`].
    pub fn open(&self, index: u32, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), FileError> {
        let expected = self.plain_len(index)?;
        if chunk.len() != expected + TAG_LEN {
            return Err(FileError::ChunkLength { index, got: chunk.len(), expected: expected + TAG_LEN });
        }
        let (body, tag) = chunk.split_at(expected);
        let tag = Tag::try_from(tag).map_err(|_| FileError::ChunkTagFailure { index })?;
        out.clear();
        out.extend_from_slice(body);
        if self
            .aead
            .decrypt_inout_detached(&self.nonce(index).into(), &self.aad, out.as_mut_slice().into(), &tag)
            .is_err()
        {
            out.clear();
            return Err(FileError::ChunkTagFailure { index });
        }
        Ok(())
    }
}

/// Opens a file's chunks in order and checks the whole: every chunk authenticates, none is missing, and
/// the plaintext's SHA-256 equals the signed one. Memory use is one chunk, whatever the file size.
pub struct StreamOpener {
    cipher: ChunkCipher,
    next: u32,
    hasher: Sha256,
    expected: [u8; 32],
}

impl fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamOpener(next {} of {})", self.next, self.cipher.chunk_count)
    }
}

impl StreamOpener {
    pub fn new(cipher: ChunkCipher, meta: &FileMeta) -> Self {
        Self { cipher, next: 0, hasher: Sha256::new(), expected: meta.sha256 }
    }

    /// Index of the chunk [`StreamOpener::open_next`] expects.
    pub fn next_index(&self) -> u32 {
        self.next
    }

    /// Opens the next chunk into `out`. Fails like [`ChunkCipher::open`]; a failure leaves the opener
    /// where it was.
    pub fn open_next(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), FileError> {
        self.cipher.open(self.next, chunk, out)?;
        self.hasher.update(&out[..]);
        self.next += 1;
        Ok(())
    }

    /// Ends the stream. Fails with [`FileError::Truncated`] if chunks are missing and
    /// [`FileError::HashMismatch`] if the plaintext differs from the signed checksum.
    pub fn finish(self) -> Result<(), FileError> {
        if self.next != self.cipher.chunk_count {
            return Err(FileError::Truncated { got: self.next, count: self.cipher.chunk_count });
        }
        let got: [u8; 32] = self.hasher.finalize().into();
        if subtle::ConstantTimeEq::ct_eq(&got[..], &self.expected[..]).into() {
            Ok(())
        } else {
            Err(FileError::HashMismatch)
        }
    }
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
