//! Base64url without padding, the encoding of every binary value in the registry's JSON.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::Error;

/// Encodes bytes as base64url without padding.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding. Fails on padding, other alphabets or trailing garbage.
pub fn decode(text: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD.decode(text.as_bytes()).map_err(|_| Error::Malformed("invalid base64url (no padding) value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_padding() {
        let data = [0u8, 1, 2, 250, 251, 255];
        assert_eq!(decode(&encode(&data)).unwrap(), data);
        assert!(decode("AAE=").is_err());
        assert!(decode("a+b/").is_err());
    }
}
