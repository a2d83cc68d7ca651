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

    /// Every frame duration the protocol defines for this codec (docs/PROTOCOL.md, "Codecs and frame
    /// durations"). An implementation offers the subset it runs.
    pub fn protocol_durations(self) -> FrameDurations {
        match self {
            Self::Opus => FrameDurations::from_ms(&[10, 20, 40, 60]),
            // 64 ms: the seed's 1024-sample frames at 16 kHz.
            Self::Pcm16 => FrameDurations::from_ms(&[10, 20, 40, 60, 64]),
        }
    }
}

/// The frame durations in milliseconds a bit of a [`FrameDurations`] mask stands for, bit 0 first.
pub const FRAME_DURATIONS_MS: [u8; 5] = [10, 20, 40, 60, 64];

/// A set of frame durations, encoded as one byte: bit `i` set means [`FRAME_DURATIONS_MS`]`[i]` ms.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameDurations(u8);

impl FrameDurations {
    /// The set of the listed durations; durations without a bit are left out.
    pub fn from_ms(ms: &[u8]) -> Self {
        Self(FRAME_DURATIONS_MS.iter().enumerate().filter(|(_, d)| ms.contains(d)).fold(0u8, |m, (i, _)| m | 1 << i))
    }

    /// The wire byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// A set from its wire byte; fails with [`Error::Malformed`] when a bit beyond the defined durations
    /// is set.
    pub fn from_bits(bits: u8) -> Result<Self, Error> {
        if bits >> FRAME_DURATIONS_MS.len() != 0 {
            return Err(Error::Malformed("undefined frame duration bit"));
        }
        Ok(Self(bits))
    }

    pub fn contains(self, ms: u8) -> bool {
        FRAME_DURATIONS_MS.iter().position(|&d| d == ms).is_some_and(|i| self.0 & 1 << i != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Durations in both sets.
    pub fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every duration of `self` is in `other`.
    pub fn is_subset(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The durations, shortest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        FRAME_DURATIONS_MS.into_iter().enumerate().filter(move |(i, _)| self.0 & 1 << i != 0).map(|(_, d)| d)
    }

    /// The member closest to `ms` (the shorter one on a tie), if any.
    pub fn closest(self, ms: u8) -> Option<u8> {
        self.iter().min_by_key(|&d| (d.abs_diff(ms), d))
    }
}

impl fmt::Debug for FrameDurations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Display for FrameDurations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.iter().map(|d| d.to_string()).collect();
        write!(f, "{} ms", list.join("/"))
    }
}

/// One codec a peer offers or runs, with the frame durations it takes for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodecOffer {
    pub codec: Codec,
    pub durations: FrameDurations,
}

impl CodecOffer {
    /// `codec` at the listed durations (those the protocol does not define for it are left out).
    pub fn new(codec: Codec, ms: &[u8]) -> Self {
        Self { codec, durations: FrameDurations::from_ms(ms).intersect(codec.protocol_durations()) }
    }
}

impl From<Codec> for CodecOffer {
    /// The codec at every duration the protocol defines for it.
    fn from(codec: Codec) -> Self {
        Self { codec, durations: codec.protocol_durations() }
    }
}

/// How a peer obtained a media address (ICE candidate types, RFC 8445 §5.1.1). The type decides the
/// pair's priority and whether a path through it counts as direct or relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of one of the peer's own interfaces.
    Host = 1,
    /// The peer's address as a STUN server (or the registry) saw it: its NAT's public mapping.
    ServerReflexive = 2,
    /// An address allocated for the peer on a TURN relay.
    Relayed = 3,
}

impl CandidateKind {
    /// Decodes the wire value; fails with [`Error::Malformed`].
    pub fn from_u8(v: u8) -> Result<Self, Error> {
        match v {
            1 => Ok(Self::Host),
            2 => Ok(Self::ServerReflexive),
            3 => Ok(Self::Relayed),
            _ => Err(Error::Malformed("candidate type must be 1, 2 or 3")),
        }
    }

    /// Short name for logs and events (`host`, `srflx`, `relay`, as in ICE).
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::ServerReflexive => "srflx",
            Self::Relayed => "relay",
        }
    }
}

/// A media address at which a peer may be reached, with how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate(pub SocketAddr, pub CandidateKind);

impl Candidate {
    /// A host candidate (an address of a local interface).
    pub fn host(addr: SocketAddr) -> Self {
        Self(addr, CandidateKind::Host)
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }

    /// How the address was obtained.
    pub fn kind(&self) -> CandidateKind {
        self.1
    }
}

/// Most candidates one message may carry.
pub const MAX_CANDIDATES: usize = 8;

pub(crate) fn write_candidates(w: &mut Writer, cands: &[Candidate]) {
    let n = cands.len().min(MAX_CANDIDATES);
    w.u8(n as u8);
    for c in &cands[..n] {
        w.u8(c.1 as u8);
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
        let kind = CandidateKind::from_u8(r.u8("candidate type")?)?;
        let ip = match r.u8("candidate family")? {
            4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("candidate address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("candidate address")?)),
            _ => return Err(Error::Malformed("candidate family must be 4 or 6")),
        };
        out.push(Candidate(SocketAddr::new(ip, r.u16("candidate port")?), kind));
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
    fn frame_duration_sets() {
        let s = FrameDurations::from_ms(&[10, 40, 64, 33]);
        assert_eq!(s.bits(), 0b1_0101);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![10, 40, 64]);
        assert!(s.contains(40) && !s.contains(20) && !s.contains(33));
        assert_eq!(FrameDurations::from_bits(0b10_0000), Err(Error::Malformed("undefined frame duration bit")));
        assert_eq!(s.closest(20), Some(10), "a tie goes to the shorter duration");
        assert_eq!(s.closest(60), Some(64));
        assert_eq!(FrameDurations::default().closest(20), None);
        assert_eq!(CodecOffer::new(Codec::Opus, &[20, 64]).durations, FrameDurations::from_ms(&[20]));
        assert_eq!(s.to_string(), "10/40/64 ms");
    }

    #[test]
    fn call_id_hex_round_trip() {
        let id = CallId::from_bytes([0xab; 16]);
        assert_eq!(CallId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(CallId::from_hex("xyz").is_err());
        assert!(CallId::from_hex(&"g".repeat(32)).is_err());
    }
}
