//! Registry request signatures: every authenticated HTTP request carries the user, the registry origin it
//! is meant for, a timestamp and an Ed25519 signature over the exact byte string built by
//! [`signing_bytes`]. The origin line binds a signature to one registry: the same request replayed to
//! another registry does not verify there.

use sha2::{Digest as _, Sha256};

use crate::identity::SIGNATURE_LEN;
use crate::{Error, IdentityKey, IdentitySecret};

/// Header naming the signing user.
pub const HEADER_USER: &str = "x-qvoice-user";
/// Header with the registry origin the request was signed for (canonical form, see [`origin`]).
pub const HEADER_ORIGIN: &str = "x-qvoice-origin";
/// Header with the signing time, Unix milliseconds in decimal.
pub const HEADER_TIMESTAMP: &str = "x-qvoice-timestamp";
/// Header with the base64url (no padding) Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "x-qvoice-signature";

/// `v2` since the origin line was added: a version-1 signature (six lines) never verifies as version 2.
const LABEL: &str = "qvoice/v2 request";

/// The signed byte string, seven lines joined by `\n`: `qvoice/v2 request`, the registry origin
/// (canonical, see [`origin`]), METHOD (upper case), path and query exactly as sent, user, timestamp
/// (decimal Unix ms), lowercase hex SHA-256 of the body (of the empty string for no body).
pub fn signing_bytes(
    origin: &str,
    method: &str,
    path_and_query: &str,
    user: &str,
    timestamp_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = crate::types::to_hex(&Sha256::digest(body));
    let method = method.to_ascii_uppercase();
    format!("{LABEL}\n{origin}\n{method}\n{path_and_query}\n{user}\n{timestamp_ms}\n{body_hash}").into_bytes()
}

pub fn sign_request(
    identity: &IdentitySecret,
    origin: &str,
    method: &str,
    path_and_query: &str,
    user: &str,
    timestamp_ms: u64,
    body: &[u8],
) -> [u8; SIGNATURE_LEN] {
    identity.sign(&signing_bytes(origin, method, path_and_query, user, timestamp_ms, body))
}

/// Fails with [`Error::BadSignature`] when `sig` is not `key`'s signature over the request.
#[allow(clippy::too_many_arguments)]
pub fn verify_request(
    key: &IdentityKey,
    origin: &str,
    method: &str,
    path_and_query: &str,
    user: &str,
    timestamp_ms: u64,
    body: &[u8],
    sig: &[u8],
) -> Result<(), Error> {
    key.verify(&signing_bytes(origin, method, path_and_query, user, timestamp_ms, body), sig)
}

/// The canonical origin of a registry URL: `scheme://host:port`, scheme and host in lower case, the
/// port always written (80 for http and 443 for https when the URL leaves it out), an IPv6 host in
/// brackets. This is the form clients sign and send in [`HEADER_ORIGIN`].
pub fn origin(scheme: &str, host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    format!("{}://{host}:{port}", scheme.to_ascii_lowercase())
}

/// The canonical origin of a base URL such as `https://Registry.example/` or `http://[::1]:5001`: the
/// scheme (http or https), host and port (80/443 when absent); any path is ignored. Fails with
/// [`Error::Malformed`] on another scheme, user info, an empty host or a bad port.
pub fn origin_of_url(url: &str) -> Result<String, Error> {
    let bad = Error::Malformed("registry URL must look like http://host:port or https://host");
    let (scheme, rest) = url.trim().split_once("://").ok_or(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or(bad)?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(bad)?,
        None => default_port,
    };
    let o = origin(&scheme, host, port);
    parse_origin(&o)?;
    Ok(o)
}

/// A canonical origin split into its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Lower-case host name, IPv4 address, or IPv6 address in brackets.
    pub host: &'a str,
    pub port: u16,
}

/// Parses an origin in canonical form (exactly what [`origin`] produces). Fails with
/// [`Error::Malformed`] on anything else, so two spellings of one registry cannot both be signed.
pub fn parse_origin(s: &str) -> Result<Origin<'_>, Error> {
    let bad = Error::Malformed("origin must be scheme://host:port in lower case");
    let (scheme, rest) = s.split_once("://").ok_or(bad)?;
    if scheme != "http" && scheme != "https" {
        return Err(bad);
    }
    let (host, port) = rest.rsplit_once(':').ok_or(bad)?;
    let port_ok =
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && !port.starts_with('0');
    let port: u16 = if port_ok { port.parse().map_err(|_| bad)? } else { return Err(bad) };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.'))
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
    };
    if !host_ok {
        return Err(bad);
    }
    Ok(Origin { scheme, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const O: &str = "https://registry.example:443";

    #[test]
    fn sign_verify_and_every_field_is_bound() {
        let id = IdentitySecret::generate(&mut ChaCha20Rng::seed_from_u64(3));
        let sig = sign_request(&id, O, "post", "/call/accept", "bob", 1_700_000_000_000, b"{}");
        let key = id.public();
        verify_request(&key, O, "POST", "/call/accept", "bob", 1_700_000_000_000, b"{}", &sig).unwrap();
        let other = "https://registry.example:8443";
        let bad = [
            verify_request(&key, other, "POST", "/call/accept", "bob", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, O, "GET", "/call/accept", "bob", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, O, "POST", "/call/reject", "bob", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, O, "POST", "/call/accept", "eve", 1_700_000_000_000, b"{}", &sig),
            verify_request(&key, O, "POST", "/call/accept", "bob", 1_700_000_000_001, b"{}", &sig),
            verify_request(&key, O, "POST", "/call/accept", "bob", 1_700_000_000_000, b"{ }", &sig),
        ];
        assert!(bad.iter().all(|r| *r == Err(Error::BadSignature)));
    }

    #[test]
    fn signing_bytes_layout() {
        let s = signing_bytes("http://127.0.0.1:5001", "get", "/users?limit=5", "al", 5, b"");
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "qvoice/v2 request\nhttp://127.0.0.1:5001\nGET\n/users?limit=5\nal\n5\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(origin_of_url("http://127.0.0.1:5001").unwrap(), "http://127.0.0.1:5001");
        assert_eq!(origin_of_url("HTTPS://Registry.Example/").unwrap(), "https://registry.example:443");
        assert_eq!(origin_of_url("http://registry.example/qvoice?x#y").unwrap(), "http://registry.example:80");
        assert_eq!(origin_of_url("http://[::1]:5001/").unwrap(), "http://[::1]:5001");
        assert_eq!(origin_of_url("https://[2001:DB8::1]").unwrap(), "https://[2001:db8::1]:443");
        for bad in
            ["registry.example:5001", "ftp://x:1", "http://u@x:1", "http://:5001", "http://x:0", "http://x:99999"]
        {
            assert!(origin_of_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_canonical() {
        assert_eq!(origin("HTTPS", "Registry.Example", 443), "https://registry.example:443");
        assert_eq!(origin("http", "::1", 5001), "http://[::1]:5001");
        assert_eq!(origin("http", "[::1]", 5001), "http://[::1]:5001");
        let o = parse_origin("http://[::1]:5001").unwrap();
        assert_eq!((o.scheme, o.host, o.port), ("http", "[::1]", 5001));
        parse_origin("https://registry.example:443").unwrap();
        for bad in [
            "https://registry.example",
            "HTTPS://registry.example:443",
            "https://Registry.example:443",
            "ftp://registry.example:21",
            "https://registry.example:0443",
            "https://registry.example:65536",
            "https://registry.example:443/",
            "https://user@registry.example:443",
            "https://:443",
            "http://[]:80",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
