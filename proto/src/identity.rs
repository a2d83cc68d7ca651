//! Long-term identity (Ed25519) and the signed ML-KEM-768 prekey: the seed's "registered Kyber public key",
//! signed so the registry cannot substitute it; and Signal-style safety numbers.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use ml_kem::kem::KeyExport as _;
use ml_kem::ml_kem_768::{DecapsulationKey, EncapsulationKey};
use rand_core::CryptoRng;
use sha2::{Digest as _, Sha512};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::types::to_hex;
use crate::{Error, Username};

/// Ed25519 public key length.
pub const IDENTITY_KEY_LEN: usize = 32;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// ML-KEM-768 encapsulation key length (FIPS 203).
pub const KEM_PUBLIC_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length (FIPS 203).
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM decapsulation key seed (d ‖ z) length.
pub const KEM_SEED_LEN: usize = 64;
/// Encoded [`SignedPrekey`]: id (4) ‖ expiry (8) ‖ encapsulation key (1184) ‖ signature (64).
pub const SIGNED_PREKEY_LEN: usize = 4 + 8 + KEM_PUBLIC_LEN + SIGNATURE_LEN;
/// How long a published prekey stays valid after its owner created it (30 days). Owners rotate well
/// before (7 days by default) and keep the secret until [`PREKEY_RETENTION_MS`] after expiry.
pub const PREKEY_LIFETIME_MS: u64 = 30 * 86_400_000;
/// How long an owner keeps a prekey secret after the prekey expired: a caller may have encapsulated to it
/// just before expiry, and its REVEAL arrives within the ringing timeout plus clock skew.
pub const PREKEY_RETENTION_MS: u64 = 3_600_000;

/// The label changed from `v1` when the expiry entered the signed bytes, so a version-1 prekey signature
/// can never verify as a version-2 one.
const PREKEY_SIG_LABEL: &[u8] = b"qvoice/v2 prekey sig";
const SAFETY_LABEL: &[u8] = b"qvoice/v1 safety number";
const SAFETY_ITERATIONS: usize = 5200;

/// A user's long-term Ed25519 signing key. Zeroized on drop; never printed.
pub struct IdentitySecret(SigningKey);

impl IdentitySecret {
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(SigningKey::generate(rng))
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.0.verifying_key())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }

    /// The X25519 secret of this identity: the first half of SHA-512(seed), which X25519 clamps (RFC 8032
    /// §5.1.5; libsodium's `crypto_sign_ed25519_sk_to_curve25519`). Used only by file transfer (see
    /// `file.rs` for why the identity key and not a separate one).
    pub(crate) fn x25519_scalar(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_scalar_bytes())
    }
}

impl fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentitySecret(public {:?})", self.public())
    }
}

/// A user's long-term Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityKey(VerifyingKey);

impl IdentityKey {
    /// Fails on a wrong length, a non-canonical point or a small-order (weak) key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let arr: [u8; IDENTITY_KEY_LEN] =
            bytes.try_into().map_err(|_| Error::InvalidKey("identity key must be 32 bytes"))?;
        let vk = VerifyingKey::from_bytes(&arr)
            .map_err(|_| Error::InvalidKey("identity key is not a valid Ed25519 point"))?;
        if vk.is_weak() {
            return Err(Error::InvalidKey("identity key has small order"));
        }
        Ok(Self(vk))
    }

    pub fn as_bytes(&self) -> &[u8; IDENTITY_KEY_LEN] {
        self.0.as_bytes()
    }

    /// Strict Ed25519 verification (rejects malleable signatures). Fails with [`Error::BadSignature`].
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), Error> {
        let arr: [u8; SIGNATURE_LEN] = sig.try_into().map_err(|_| Error::BadSignature)?;
        self.0.verify_strict(msg, &Signature::from_bytes(&arr)).map_err(|_| Error::BadSignature)
    }

    /// The identity key in Montgomery form: the X25519 public key matching
    /// [`IdentitySecret`]'s X25519 secret (the birational map of RFC 7748 §4.1).
    pub fn to_x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// First 8 bytes in hex, for logs and debugging (a key fingerprint, not a secret).
    pub fn short_fingerprint(&self) -> String {
        to_hex(&self.as_bytes()[..8])
    }
}

impl std::hash::Hash for IdentityKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.short_fingerprint())
    }
}

/// The secret half of a prekey: an ML-KEM-768 decapsulation key (stored as its 64-byte seed) and its id.
pub struct PrekeySecret {
    id: u32,
    dk: DecapsulationKey,
}

impl PrekeySecret {
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, id: u32) -> Self {
        let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(id, &seed)
    }

    /// Rebuilds the key from the FIPS 203 seed `d ‖ z`.
    pub fn from_seed(id: u32, seed: &[u8; KEM_SEED_LEN]) -> Self {
        Self { id, dk: DecapsulationKey::from_seed((*seed).into()) }
    }

    pub fn to_seed(&self) -> Zeroizing<[u8; KEM_SEED_LEN]> {
        let mut out = Zeroizing::new([0u8; KEM_SEED_LEN]);
        if let Some(seed) = self.dk.to_seed() {
            out.copy_from_slice(seed.as_slice());
        }
        out
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn public_bytes(&self) -> [u8; KEM_PUBLIC_LEN] {
        let mut out = [0u8; KEM_PUBLIC_LEN];
        out.copy_from_slice(self.dk.encapsulation_key().to_bytes().as_slice());
        out
    }

    /// The published form, valid until `expires_ms` (Unix ms; normally creation + [`PREKEY_LIFETIME_MS`]).
    pub fn sign(&self, identity: &IdentitySecret, expires_ms: u64) -> SignedPrekey {
        let ek = self.public_bytes();
        let sig = identity.sign(&SignedPrekey::signed_bytes(self.id, expires_ms, &ek));
        SignedPrekey { id: self.id, expires_ms, ek, sig }
    }

    pub(crate) fn decapsulation_key(&self) -> &DecapsulationKey {
        &self.dk
    }
}

impl fmt::Debug for PrekeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrekeySecret(id {})", self.id)
    }
}

/// A published prekey: `id ‖ expires_ms ‖ ML-KEM-768 encapsulation key ‖ Ed25519 signature` by the
/// owner's identity over `"qvoice/v2 prekey sig" ‖ id ‖ expires_ms ‖ ek`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPrekey {
    pub id: u32,
    /// Unix ms after which callers refuse it.
    pub expires_ms: u64,
    pub ek: [u8; KEM_PUBLIC_LEN],
    pub sig: [u8; SIGNATURE_LEN],
}

impl SignedPrekey {
    /// The bytes the owner signs.
    pub fn signed_bytes(id: u32, expires_ms: u64, ek: &[u8; KEM_PUBLIC_LEN]) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(PREKEY_SIG_LABEL).u32(id).u64(expires_ms).bytes(ek);
        w.buf
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u32(self.id).u64(self.expires_ms).bytes(&self.ek).bytes(&self.sig);
        w.buf
    }

    /// Parses the 1260-byte encoding; checks the key is a valid ML-KEM-768 key, not the signature.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != SIGNED_PREKEY_LEN {
            return Err(Error::InvalidKey("signed prekey must be 1260 bytes"));
        }
        let mut r = Reader::new(bytes);
        let id = r.u32("prekey id")?;
        let expires_ms = r.u64("prekey expiry")?;
        let ek = r.array::<KEM_PUBLIC_LEN>("prekey")?;
        let sig = r.array::<SIGNATURE_LEN>("prekey signature")?;
        encapsulation_key(&ek)?;
        Ok(Self { id, expires_ms, ek, sig })
    }

    /// Checks the owner's signature. Fails with [`Error::BadSignature`].
    pub fn verify(&self, owner: &IdentityKey) -> Result<(), Error> {
        owner.verify(&Self::signed_bytes(self.id, self.expires_ms, &self.ek), &self.sig)
    }

    /// Checks the owner's signature and that the prekey has not expired at `now_ms`. Fails with
    /// [`Error::BadSignature`] or [`Error::PrekeyExpired`].
    pub fn verify_at(&self, owner: &IdentityKey, now_ms: u64) -> Result<(), Error> {
        self.verify(owner)?;
        if now_ms >= self.expires_ms {
            return Err(Error::PrekeyExpired { expires_ms: self.expires_ms });
        }
        Ok(())
    }
}

impl fmt::Debug for SignedPrekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedPrekey(id {}, expires {})", self.id, self.expires_ms)
    }
}

/// Decodes and validates (FIPS 203 modulus check) an ML-KEM-768 encapsulation key.
pub(crate) fn encapsulation_key(bytes: &[u8; KEM_PUBLIC_LEN]) -> Result<EncapsulationKey, Error> {
    EncapsulationKey::new(&(*bytes).into()).map_err(|_| Error::InvalidKey("not a valid ML-KEM-768 encapsulation key"))
}

/// The per-contact safety number: 60 digits in 12 groups of 5, identical whichever side computes it.
/// Each half is Signal's iterated fingerprint (5200 rounds of SHA-512 over the key and name); the
/// halves are sorted so the order of the arguments does not matter.
pub fn safety_number(a_name: &Username, a: &IdentityKey, b_name: &Username, b: &IdentityKey) -> String {
    let mut halves = [fingerprint_digits(a_name, a), fingerprint_digits(b_name, b)];
    halves.sort();
    let all = halves.concat();
    let groups: Vec<&str> = all.as_bytes().chunks(5).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    groups.join(" ")
}

fn fingerprint_digits(name: &Username, key: &IdentityKey) -> String {
    let mut hash = Sha512::new()
        .chain_update(SAFETY_LABEL)
        .chain_update(key.as_bytes())
        .chain_update(name.as_str().as_bytes())
        .finalize();
    for _ in 0..SAFETY_ITERATIONS {
        hash = Sha512::new().chain_update(hash).chain_update(key.as_bytes()).finalize();
    }
    let mut out = String::with_capacity(30);
    for chunk in hash[..30].chunks_exact(5) {
        let mut v = 0u64;
        for b in chunk {
            v = v << 8 | u64::from(*b);
        }
        out.push_str(&format!("{:05}", v % 100_000));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn prekey_sign_verify_round_trip() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let id = IdentitySecret::generate(&mut rng);
        let pk = PrekeySecret::generate(&mut rng, 7);
        let signed = pk.sign(&id, 5_000);
        let parsed = SignedPrekey::parse(&signed.to_bytes()).unwrap();
        assert_eq!(parsed, signed);
        parsed.verify(&id.public()).unwrap();
        parsed.verify_at(&id.public(), 4_999).unwrap();
        assert_eq!(parsed.verify_at(&id.public(), 5_000), Err(Error::PrekeyExpired { expires_ms: 5_000 }));
        // The expiry is signed: moving it is a forgery.
        let mut later = parsed.clone();
        later.expires_ms += 1;
        assert_eq!(later.verify(&id.public()), Err(Error::BadSignature));
        let other = IdentitySecret::generate(&mut rng);
        assert_eq!(parsed.verify(&other.public()), Err(Error::BadSignature));
        let mut forged = parsed.clone();
        forged.ek[10] ^= 1;
        assert_eq!(forged.verify(&id.public()), Err(Error::BadSignature));
        let again = PrekeySecret::from_seed(7, &pk.to_seed());
        assert_eq!(again.public_bytes(), pk.public_bytes());
    }

    #[test]
    fn identity_key_validation() {
        assert!(IdentityKey::from_bytes(&[0u8; 31]).is_err());
        // The identity point (small order) must be refused.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert!(IdentityKey::from_bytes(&ident).is_err());
    }

    #[test]
    fn safety_number_is_symmetric_and_key_bound() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (a, b, c) = (
            IdentitySecret::generate(&mut rng).public(),
            IdentitySecret::generate(&mut rng).public(),
            IdentitySecret::generate(&mut rng).public(),
        );
        let (an, bn) = (Username::parse("alice").unwrap(), Username::parse("bob").unwrap());
        let ab = safety_number(&an, &a, &bn, &b);
        assert_eq!(ab, safety_number(&bn, &b, &an, &a));
        assert_eq!(ab.len(), 60 + 11);
        assert_ne!(ab, safety_number(&an, &a, &bn, &c));
    }
}
