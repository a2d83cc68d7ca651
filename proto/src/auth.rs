//! Registry request signatures: every authenticated HTTP request carries the user, a timestamp and an
//! Ed25519 signature over the exact byte string built by [`signing_bytes`].

use sha2::{Digest as _, Sha256};

use crate::identity::SIGNATURE_LEN;
use crate::{Error, IdentityKey, IdentitySecret};

/// Header naming the signing user.
pub const HEADER_USER: &str = "x-qvoice-user";
/// Header with the signing time, Unix milliseconds in decimal.
pub const HEADER_TIMESTAMP: &str = "x-qvoice-timestamp";
/// Header with the base64url (no padding) Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "x-qvoice-signature";

const LABEL: &str = "qvoice/v1 request";

/// The signed byte string, lines joined by `\n`:
/// `qvoice/v1 request`, METHOD (upper case), path and query exactly as sent, user, timestamp (decimal
/// Unix ms), lowercase hex SHA-256 of the body (of the empty string for no body).
pub fn signing_bytes(method: &str, path_and_query: &str, user: &str, timestamp_ms: u64, body: &[u8]) -> Vec<u8> {
    let body_hash = crate::types::to_hex(&Sha256::digest(body));
    format!("{LABEL}\n{}\n{path_and_query}\n{user}\n{timestamp_ms}\n{body_hash}", method.to_ascii_uppercase())
        .into_bytes()
}

pub fn sign_request(
    identity: &IdentitySecret,
    method: &str,
    path_and_query: &str,
    user: &str,
    timestamp_ms: u64,
    body: &[u8],
) -> [u8; SIGNATURE_LEN] {
    identity.sign(&signing_bytes(method, path_and_query, user, timestamp_ms, body))
}

/// Fails with [`Error::BadSignature`] when `sig` is not `key`'s signature over the request.
pub fn verify_request(
    key: &IdentityKey,
    method: &str,
    path_and_query: &str,
    user: &str,
    timestamp_ms: u64,
    body: &[u8],
    sig: &[u8],
) -> Result<(), Error> {
    key.verify(&signing_bytes(method, path_and_query, user, timestamp_ms, body), sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_every_field_is_bound() {
        let id = IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(3));
        let sig = sign_request(&id, "post", "/call/accept", "bob", 1_700_000_000_000, b"{}");
        let key = id.public();
        verify_request(&key, "POST", "/call/accept", "bob", 1_700_000_000_000, b"{}", &sig).unwrap();
        let bad = [
            verify_request(&key, "GET", "/call/accept", "bob", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, "POST", "/call/reject", "bob", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, "POST", "/call/accept", "eve", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, "POST", "/call/accept", "bob", 1_700_000_000_001, b"{}", &sig),
            verify_request(&key, "POST", "/call/accept", "bob", 1_700_000_000_000, b"{ }", &sig),
        ];
        assert!(bad.iter().all(|r| *r == Err(Error::BadSignature)));
    }

    #[test]
    fn signing_bytes_layout() {
        let s = signing_bytes("get", "/users?limit=5", "al", 5, b"");
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "qvoice/v1 request\nGET\n/users?limit=5\nal\n5\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
