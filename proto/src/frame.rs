//! The media datagram format: a 14-byte cleartext header (authenticated as AAD), the AES-256-GCM
//! ciphertext and a 16-byte tag; plus the plaintext layouts of each frame type's payload.
//!
//! ```text
//! 0      1      2              6                      14               n-16      n
//! | v|t  | flags| recv session | counter (u64 BE)     | ciphertext ...   | tag     |
//! ```

use crate::{Error, SessionId};

pub const HEADER_LEN: usize = 14;
pub const TAG_LEN: usize = 16;
/// Bytes a frame adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest datagram a peer sends or accepts. Opus frames stay far below a 1500-byte MTU; the limit is
/// higher so the seed's 1024-sample PCM frames (2048 bytes) still fit, at the price of IP fragmentation.
pub const MAX_DATAGRAM: usize = 4096;
/// Largest plaintext payload of one frame.
pub const MAX_PAYLOAD: usize = MAX_DATAGRAM - OVERHEAD;

/// Header flag: the payload went through the seed's obfuscation keystream before encryption.
pub const FLAG_OBFUSCATED: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_OBFUSCATED;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// One codec frame ([`AudioPayload`]).
    Audio = 1,
    /// Path check and RTT measurement ([`Probe`]).
    Probe = 2,
    /// Echo of a [`Probe`].
    ProbeAck = 3,
    /// Receiver report ([`StatsReport`]).
    Stats = 4,
    /// The sender is leaving the call ([`Bye`]).
    Bye = 5,
    /// Keeps NAT bindings open during silence; empty payload.
    Keepalive = 6,
}

impl FrameType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Audio,
            2 => Self::Probe,
            3 => Self::ProbeAck,
            4 => Self::Stats,
            5 => Self::Bye,
            6 => Self::Keepalive,
            _ => return None,
        })
    }
}

/// The cleartext frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub ftype: FrameType,
    pub flags: u8,
    /// The receiver's session id.
    pub session: SessionId,
    /// The sender's per-direction frame counter (also the nonce input).
    pub counter: u64,
}

impl Header {
    pub fn write_to(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = crate::FRAME_VERSION << 4 | self.ftype as u8;
        out[1] = self.flags;
        out[2..6].copy_from_slice(&self.session.0.to_be_bytes());
        out[6..14].copy_from_slice(&self.counter.to_be_bytes());
    }
}

/// Parses the header of a datagram without any cryptography, checking version, type, flags and that
/// the datagram is long enough to hold a tag. Fails with [`Error::Malformed`].
pub fn peek_header(datagram: &[u8]) -> Result<Header, Error> {
    if datagram.len() < OVERHEAD {
        return Err(Error::Malformed("datagram shorter than header and tag"));
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(Error::Malformed("datagram longer than 4096 bytes"));
    }
    if datagram[0] >> 4 != crate::FRAME_VERSION {
        return Err(Error::Malformed("unknown frame version"));
    }
    let ftype = FrameType::from_u8(datagram[0] & 0x0f).ok_or(Error::Malformed("unknown frame type"))?;
    let flags = datagram[1];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::Malformed("unknown frame flags"));
    }
    let session = SessionId(u32::from_be_bytes([datagram[2], datagram[3], datagram[4], datagram[5]]));
    let mut c = [0u8; 8];
    c.copy_from_slice(&datagram[6..14]);
    Ok(Header { ftype, flags, session, counter: u64::from_be_bytes(c) })
}

/// Audio payload: `timestamp (u32 BE, 48 kHz sample clock of the first sample) ‖ codec frame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioPayload<'a> {
    pub timestamp: u32,
    pub data: &'a [u8],
}

impl<'a> AudioPayload<'a> {
    pub const HEADER: usize = 4;

    /// Writes into `out`; fails with [`Error::BufferTooSmall`].
    pub fn write_to(&self, out: &mut [u8]) -> Result<usize, Error> {
        let n = Self::HEADER + self.data.len();
        let dst = out.get_mut(..n).ok_or(Error::BufferTooSmall)?;
        dst[..4].copy_from_slice(&self.timestamp.to_be_bytes());
        dst[4..].copy_from_slice(self.data);
        Ok(n)
    }

    pub fn parse(payload: &'a [u8]) -> Result<Self, Error> {
        if payload.len() < Self::HEADER {
            return Err(Error::Malformed("audio payload shorter than its timestamp"));
        }
        let timestamp = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        Ok(Self { timestamp, data: &payload[4..] })
    }
}

/// Probe and probe-ack payload: `id (u32 BE) ‖ sender clock in µs (u64 BE)`; the ack echoes both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub id: u32,
    pub sent_us: u64,
}

impl Probe {
    pub const LEN: usize = 12;

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&self.id.to_be_bytes());
        out[4..].copy_from_slice(&self.sent_us.to_be_bytes());
        out
    }

    pub fn parse(p: &[u8]) -> Result<Self, Error> {
        let p: &[u8; Self::LEN] = p.try_into().map_err(|_| Error::Malformed("probe payload must be 12 bytes"))?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&p[4..]);
        Ok(Self { id: u32::from_be_bytes([p[0], p[1], p[2], p[3]]), sent_us: u64::from_be_bytes(t) })
    }
}

/// Receiver report: `received (u64) ‖ lost (u64) ‖ jitter µs (u32) ‖ loss ‰ over the last interval (u16)`, BE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsReport {
    pub received: u64,
    pub lost: u64,
    pub jitter_us: u32,
    pub loss_permille: u16,
}

impl StatsReport {
    pub const LEN: usize = 22;

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.received.to_be_bytes());
        out[8..16].copy_from_slice(&self.lost.to_be_bytes());
        out[16..20].copy_from_slice(&self.jitter_us.to_be_bytes());
        out[20..].copy_from_slice(&self.loss_permille.to_be_bytes());
        out
    }

    pub fn parse(p: &[u8]) -> Result<Self, Error> {
        let p: &[u8; Self::LEN] = p.try_into().map_err(|_| Error::Malformed("stats payload must be 22 bytes"))?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Self {
            received: u64_at(0),
            lost: u64_at(8),
            jitter_us: u32::from_be_bytes([p[16], p[17], p[18], p[19]]),
            loss_permille: u16::from_be_bytes([p[20], p[21]]),
        })
    }
}

/// Why a peer left: payload is one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bye {
    Hangup = 0,
    Error = 1,
    Shutdown = 2,
}

impl Bye {
    pub fn parse(p: &[u8]) -> Result<Self, Error> {
        match p {
            [0] => Ok(Self::Hangup),
            [1] => Ok(Self::Error),
            [2] => Ok(Self::Shutdown),
            _ => Err(Error::Malformed("bye payload must be one byte 0..=2")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejections() {
        let h =
            Header { ftype: FrameType::Probe, flags: FLAG_OBFUSCATED, session: SessionId(0xdead_beef), counter: 42 };
        let mut d = [0u8; OVERHEAD];
        let mut hb = [0u8; HEADER_LEN];
        h.write_to(&mut hb);
        d[..HEADER_LEN].copy_from_slice(&hb);
        assert_eq!(peek_header(&d).unwrap(), h);
        assert!(peek_header(&d[..OVERHEAD - 1]).is_err());
        let mut bad = d;
        bad[0] = 0x21;
        assert!(peek_header(&bad).is_err());
        bad = d;
        bad[0] = 0x1f;
        assert!(peek_header(&bad).is_err());
        bad = d;
        bad[1] = 0x80;
        assert!(peek_header(&bad).is_err());
        assert!(peek_header(&[0u8; MAX_DATAGRAM + 1]).is_err());
    }

    #[test]
    fn payload_round_trips() {
        let p = Probe { id: 9, sent_us: 123_456 };
        assert_eq!(Probe::parse(&p.to_bytes()).unwrap(), p);
        let s = StatsReport { received: 1, lost: 2, jitter_us: 3, loss_permille: 4 };
        assert_eq!(StatsReport::parse(&s.to_bytes()).unwrap(), s);
        let mut buf = [0u8; 16];
        let n = AudioPayload { timestamp: 960, data: b"abc" }.write_to(&mut buf).unwrap();
        assert_eq!(AudioPayload::parse(&buf[..n]).unwrap(), AudioPayload { timestamp: 960, data: b"abc" });
        assert!(AudioPayload { timestamp: 0, data: &[0; 20] }.write_to(&mut buf).is_err());
        assert_eq!(Bye::parse(&[0]).unwrap(), Bye::Hangup);
        assert!(Bye::parse(&[9]).is_err());
    }
}
