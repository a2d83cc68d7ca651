//! Newtypes validated once at the edge: the rest of the code cannot hold an invalid one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand_core::CryptoRng;

use crate::Error;
use crate::codec::{Reader, Writer};

/// Longest username, in bytes.
pub const USERNAME_MAX: usize = 32;

/// A registry username: 1 to 32 characters from `[a-z0-9_.-]`, starting with a letter or digit (so `.`,
/// `..` and `-rf` are not names: they would be path segments or command-line options).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validates `s`. Fails with [`Error::InvalidUsername`] on an empty, long or out-of-alphabet name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = s.len() <= USERNAME_MAX
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
        if ok { Ok(Self(s.to_owned())) } else { Err(Error::InvalidUsername) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl std::str::FromStr for Username {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A call identifier: 128 random bits chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId([u8; 16]);

impl CallId {
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        Self(id)
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses 32 lowercase or uppercase hex digits.
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(Error::Malformed("call id must be 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(Error::Malformed("call id must be 32 hex digits"))?;
            let lo = hex_val(pair[1]).ok_or(Error::Malformed("call id must be 32 hex digits"))?;
            out[i] = hi << 4 | lo;
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.to_hex())
    }
}

/// The receiver's media session id, carried in every frame header so a socket can demultiplex and
/// cheaply drop stray datagrams before any cryptography.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u32);

/// Which side of the call a peer is on; decides which direction's keys it sends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Caller,
    Callee,
}

/// Audio codecs a peer can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus, mono, 48 kHz.
    Opus = 1,
    /// The seed's raw 16-bit little-endian PCM, mono, 16 kHz.
    Pcm16 = 2,
}

impl Codec {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Opus),
            2 => Some(Self::Pcm16),
            _ => None,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Pcm16 => "pcm",
        }
    }

    /// Parses the names used in configuration files and JSON (`opus`, `pcm`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "opus" => Some(Self::Opus),
            "pcm" | "pcm16" => Some(Self::Pcm16),
            _ => None,
        }
    }
}

/// A media address at which a peer may be reached (local interface or registry-observed address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate(pub SocketAddr);

/// Most candidates one message may carry.
pub const MAX_CANDIDATES: usize = 8;

pub(crate) fn write_candidates(w: &mut Writer, cands: &[Candidate]) {
    let n = cands.len().min(MAX_CANDIDATES);
    w.u8(n as u8);
    for c in &cands[..n] {
        match c.0.ip() {
            IpAddr::V4(ip) => w.u8(4).bytes(&ip.octets()),
            IpAddr::V6(ip) => w.u8(6).bytes(&ip.octets()),
        };
        w.u16(c.0.port());
    }
}

pub(crate) fn read_candidates(r: &mut Reader<'_>) -> Result<Vec<Candidate>, Error> {
    let n = usize::from(r.u8("candidate count")?);
    if n > MAX_CANDIDATES {
        return Err(Error::Malformed("more than 8 candidates"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = match r.u8("candidate family")? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("candidate address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("candidate address")?)),
            _ => return Err(Error::Malformed("candidate family must be 4 or 6")),
        };
        out.push(Candidate(SocketAddr::new(ip, r.u16("candidate port")?)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "a", "7", "bob.smith_2-x", "x.", &"z".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "al ice", "ali/ce", &"z".repeat(33), "é", ".", "..", "-rf", "_x", ".bob"] {
            assert_eq!(Username::parse(bad), Err(Error::InvalidUsername), "{bad}");
        }
    }

    #[test]
    fn call_id_hex_round_trip() {
        let id = CallId::from_bytes([0xab; 16]);
        assert_eq!(CallId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(CallId::from_hex("xyz").is_err());
        assert!(CallId::from_hex(&"g".repeat(32)).is_err());
    }
}
