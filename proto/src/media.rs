//! Per-frame media protection: AES-256-GCM with nonce = IV XOR counter, header as AAD, the seed's
//! obfuscation keystream under a header flag, and an RFC 6479-style replay window.
//!
//! `seal` and `open` work in caller-supplied buffers and never allocate, so the audio path can call them
//! per frame.

use std::fmt;

use aes_gcm::aead::{AeadInOut as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::frame::{self, FLAG_OBFUSCATED, HEADER_LEN, Header, OVERHEAD, TAG_LEN};
use crate::{Error, FrameType, SessionId};

/// Keys for one direction of a call, from the handshake's key schedule.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    pub key: [u8; 32],
    pub iv: [u8; 12],
    pub obf: [u8; 32],
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionKeys(..)")
    }
}

/// Frames a receiver still accepts behind the highest counter it has seen.
pub const REPLAY_WINDOW: u64 = 1024;
const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = (REPLAY_WINDOW / BLOCK_BITS) as usize + 1;

/// RFC 6479 sliding bitmap: one extra block lets the window slide by whole blocks without losing the
/// last `REPLAY_WINDOW` positions. Updated only after a frame's tag verifies.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    top: Option<u64>,
    bitmap: [u64; BLOCKS],
}

impl ReplayWindow {
    /// Would `counter` be accepted? Fails with [`Error::Replay`] or [`Error::TooOld`].
    pub fn check(&self, counter: u64) -> Result<(), Error> {
        let Some(top) = self.top else { return Ok(()) };
        if counter > top {
            return Ok(());
        }
        if top - counter >= REPLAY_WINDOW {
            return Err(Error::TooOld);
        }
        let (block, bit) = Self::position(counter);
        if self.bitmap[block] & (1 << bit) != 0 { Err(Error::Replay) } else { Ok(()) }
    }

    /// Marks `counter` as seen (after [`check`](Self::check) passed and the tag verified).
    pub fn update(&mut self, counter: u64) {
        match self.top {
            Some(top) if counter <= top => {}
            Some(top) => {
                let old_block = top / BLOCK_BITS;
                let new_block = counter / BLOCK_BITS;
                let steps = (new_block - old_block).min(BLOCKS as u64);
                for i in 1..=steps {
                    self.bitmap[((old_block + i) % BLOCKS as u64) as usize] = 0;
                }
                self.top = Some(counter);
            }
            None => self.top = Some(counter),
        }
        let (block, bit) = Self::position(counter);
        self.bitmap[block] |= 1 << bit;
    }

    fn position(counter: u64) -> (usize, u64) {
        (((counter / BLOCK_BITS) % BLOCKS as u64) as usize, counter % BLOCK_BITS)
    }
}

/// A frame that opened: its type, counter and decrypted payload (inside the caller's buffer).
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub ftype: FrameType,
    pub counter: u64,
    pub payload: &'a [u8],
}

/// Both directions' media keys of one call, with the send counter and the receive replay window.
pub struct MediaCrypto {
    send: Aes256Gcm,
    send_iv: [u8; 12],
    send_obf: [u8; 32],
    send_counter: u64,
    recv: Aes256Gcm,
    recv_iv: [u8; 12],
    recv_obf: [u8; 32],
    window: ReplayWindow,
    local_session: SessionId,
    peer_session: SessionId,
    obfuscate: bool,
}

impl fmt::Debug for MediaCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaCrypto")
            .field("local_session", &self.local_session)
            .field("peer_session", &self.peer_session)
            .field("send_counter", &self.send_counter)
            .field("obfuscate", &self.obfuscate)
            .finish_non_exhaustive()
    }
}

impl Drop for MediaCrypto {
    fn drop(&mut self) {
        self.send_iv.zeroize();
        self.send_obf.zeroize();
        self.recv_iv.zeroize();
        self.recv_obf.zeroize();
    }
}

impl MediaCrypto {
    /// Builds the per-call state. `local_session` is what the peer puts in frames to us, `peer_session`
    /// what we put in frames to the peer.
    pub fn new(
        send: &DirectionKeys,
        recv: &DirectionKeys,
        local_session: SessionId,
        peer_session: SessionId,
        obfuscate: bool,
    ) -> Self {
        Self {
            send: Aes256Gcm::new(&send.key.into()),
            send_iv: send.iv,
            send_obf: send.obf,
            send_counter: 0,
            recv: Aes256Gcm::new(&recv.key.into()),
            recv_iv: recv.iv,
            recv_obf: recv.obf,
            window: ReplayWindow::default(),
            local_session,
            peer_session,
            obfuscate,
        }
    }

    pub fn local_session(&self) -> SessionId {
        self.local_session
    }

    pub fn peer_session(&self) -> SessionId {
        self.peer_session
    }

    /// Whether frames we send go through the obfuscation keystream (receiving follows each frame's flag).
    pub fn set_obfuscation(&mut self, on: bool) {
        self.obfuscate = on;
    }

    pub fn obfuscation(&self) -> bool {
        self.obfuscate
    }

    /// Counter the next sealed frame will carry.
    pub fn next_counter(&self) -> u64 {
        self.send_counter
    }

    /// Writes one datagram (`header ‖ ciphertext ‖ tag`) into `out` and returns its length.
    /// Fails with [`Error::BufferTooSmall`] when `out` or the datagram limit is too small for `payload`,
    /// and with [`Error::CounterExhausted`] after 2^64 - 1 frames, so a nonce is never reused.
    pub fn seal(&mut self, ftype: FrameType, payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let len = payload.len() + OVERHEAD;
        if len > frame::MAX_DATAGRAM || out.len() < len {
            return Err(Error::BufferTooSmall);
        }
        let counter = self.send_counter;
        if counter == u64::MAX {
            return Err(Error::CounterExhausted);
        }
        let header = Header {
            ftype,
            flags: if self.obfuscate { FLAG_OBFUSCATED } else { 0 },
            session: self.peer_session,
            counter,
        };
        let (head, rest) = out[..len].split_at_mut(HEADER_LEN);
        let mut hb = [0u8; HEADER_LEN];
        header.write_to(&mut hb);
        head.copy_from_slice(&hb);
        let (body, tag_out) = rest.split_at_mut(payload.len());
        body.copy_from_slice(payload);
        if self.obfuscate {
            apply_keystream(&self.send_obf, counter, body);
        }
        let tag = self
            .send
            .encrypt_inout_detached(&nonce(&self.send_iv, counter), &hb, body.into())
            .map_err(|_| Error::BufferTooSmall)?;
        tag_out.copy_from_slice(tag.as_slice());
        self.send_counter = counter + 1;
        Ok(len)
    }

    /// Authenticates and decrypts one datagram into `out`. The replay window is checked before and
    /// updated only after the tag verifies. Fails with [`Error::Malformed`], [`Error::WrongSession`],
    /// [`Error::Replay`], [`Error::TooOld`], [`Error::TagFailure`] or [`Error::BufferTooSmall`]; a failed
    /// frame changes no state.
    pub fn open<'a>(&mut self, datagram: &[u8], out: &'a mut [u8]) -> Result<Opened<'a>, Error> {
        let header = frame::peek_header(datagram)?;
        if header.session != self.local_session {
            return Err(Error::WrongSession);
        }
        self.window.check(header.counter)?;
        let body_len = datagram.len() - OVERHEAD;
        let body = out.get_mut(..body_len).ok_or(Error::BufferTooSmall)?;
        body.copy_from_slice(&datagram[HEADER_LEN..HEADER_LEN + body_len]);
        let tag = Tag::try_from(&datagram[HEADER_LEN + body_len..]).map_err(|_| Error::TagFailure)?;
        self.recv
            .decrypt_inout_detached(&nonce(&self.recv_iv, header.counter), &datagram[..HEADER_LEN], body.into(), &tag)
            .map_err(|_| Error::TagFailure)?;
        self.window.update(header.counter);
        if header.flags & FLAG_OBFUSCATED != 0 {
            apply_keystream(&self.recv_obf, header.counter, body);
        }
        Ok(Opened { ftype: header.ftype, counter: header.counter, payload: body })
    }
}

const _: () = assert!(TAG_LEN == 16);

/// nonce = IV XOR (counter as 12-byte big-endian).
fn nonce(iv: &[u8; 12], counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = *iv;
    for (b, c) in n[4..].iter_mut().zip(counter.to_be_bytes()) {
        *b ^= c;
    }
    n.into()
}

/// The seed's obfuscation step, made a keystream: block `i` is SHA-256(obf_key ‖ counter ‖ i), XORed over
/// the payload. It is keyed by the handshake but adds no confidentiality beyond AES-GCM (see SECURITY.md).
pub fn apply_keystream(obf_key: &[u8; 32], counter: u64, data: &mut [u8]) {
    for (i, chunk) in data.chunks_mut(32).enumerate() {
        let block = Sha256::new()
            .chain_update(obf_key)
            .chain_update(counter.to_be_bytes())
            .chain_update((i as u32).to_be_bytes())
            .finalize();
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
    }
}

/// Helpers shared by this crate's tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// Seals `payload` on `from` and asserts it opens unchanged on `to`.
    pub(crate) fn exchange(from: &mut MediaCrypto, to: &mut MediaCrypto, ftype: FrameType, payload: &[u8]) {
        let (mut wire, mut out) = ([0u8; 4096], [0u8; 4096]);
        let n = from.seal(ftype, payload, &mut wire).expect("seal");
        let opened = to.open(&wire[..n], &mut out).expect("open");
        assert_eq!((opened.ftype, opened.payload), (ftype, payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> DirectionKeys {
        DirectionKeys { key: [seed; 32], iv: [seed.wrapping_add(1); 12], obf: [seed.wrapping_add(2); 32] }
    }

    /// A caller/callee pair wired like the handshake does: each side's send keys are the other's receive keys.
    pub(crate) fn pair(obfuscate: bool) -> (MediaCrypto, MediaCrypto) {
        let (c2s, s2c) = (keys(1), keys(7));
        let caller = MediaCrypto::new(&c2s, &s2c, SessionId(11), SessionId(22), obfuscate);
        let callee = MediaCrypto::new(&s2c, &c2s, SessionId(22), SessionId(11), obfuscate);
        (caller, callee)
    }

    #[test]
    fn round_trip_both_directions_with_and_without_obfuscation() {
        for obf in [false, true] {
            let (mut a, mut b) = pair(obf);
            let mut wire = [0u8; 4096];
            let mut out = [0u8; 4096];
            for payload in [&b""[..], b"x", &[5u8; 80], &[9u8; 2048]] {
                let n = a.seal(FrameType::Audio, payload, &mut wire).unwrap();
                assert_eq!(n, payload.len() + OVERHEAD);
                assert_eq!(wire[1] & FLAG_OBFUSCATED != 0, obf);
                let o = b.open(&wire[..n], &mut out).unwrap();
                assert_eq!(o.payload, payload);
                let n = b.seal(FrameType::Stats, payload, &mut wire).unwrap();
                assert_eq!(a.open(&wire[..n], &mut out).unwrap().payload, payload);
            }
        }
    }

    #[test]
    fn receiver_follows_the_flag_of_each_frame() {
        let (mut a, mut b) = pair(false);
        let (mut wire, mut out) = ([0u8; 200], [0u8; 200]);
        a.set_obfuscation(true);
        let n = a.seal(FrameType::Audio, b"hello", &mut wire).unwrap();
        assert_eq!(b.open(&wire[..n], &mut out).unwrap().payload, b"hello");
    }

    #[test]
    fn reflection_is_rejected() {
        let (mut a, _b) = pair(false);
        let (mut wire, mut out) = ([0u8; 200], [0u8; 200]);
        let n = a.seal(FrameType::Audio, b"hello", &mut wire).unwrap();
        // Bounce our own frame back at us with our own session id: the receive key differs.
        wire[2..6].copy_from_slice(&11u32.to_be_bytes());
        assert_eq!(a.open(&wire[..n], &mut out), Err(Error::TagFailure));
    }

    #[test]
    fn tampering_is_rejected_and_changes_nothing() {
        let (mut a, mut b) = pair(true);
        let (mut wire, mut out) = ([0u8; 200], [0u8; 200]);
        let n = a.seal(FrameType::Audio, b"some audio bytes", &mut wire).unwrap();
        for i in [0usize, 1, 7, 13, 14, 20, n - 1] {
            let mut bad = wire;
            bad[i] ^= 0x01;
            let err = b.open(&bad[..n], &mut out).unwrap_err();
            assert!(matches!(err, Error::TagFailure | Error::Malformed(_)), "byte {i}: {err:?}");
        }
        let mut wrong_session = wire;
        wrong_session[5] ^= 1;
        assert_eq!(b.open(&wrong_session[..n], &mut out), Err(Error::WrongSession));
        assert!(b.open(&wire[..n - 1], &mut out).is_err());
        // The genuine frame still opens: failures did not touch the window.
        assert!(b.open(&wire[..n], &mut out).is_ok());
    }

    #[test]
    fn replay_and_reordering() {
        let (mut a, mut b) = pair(false);
        let mut frames = Vec::new();
        for i in 0..2000u32 {
            let mut w = [0u8; 64];
            let n = a.seal(FrameType::Audio, &i.to_be_bytes(), &mut w).unwrap();
            frames.push(w[..n].to_vec());
        }
        let mut out = [0u8; 64];
        // Deliver 0..100 reversed: each accepted once; all replays rejected.
        for f in frames[..100].iter().rev() {
            b.open(f, &mut out).unwrap();
        }
        for f in &frames[..100] {
            assert_eq!(b.open(f, &mut out), Err(Error::Replay));
        }
        // Jump ahead: frames within the window still open once, older ones are too old.
        b.open(&frames[1500], &mut out).unwrap();
        assert_eq!(b.open(&frames[400], &mut out), Err(Error::TooOld));
        assert_eq!(b.open(&frames[476], &mut out), Err(Error::TooOld));
        assert_eq!(b.open(&frames[477], &mut out).unwrap().counter, 477);
        assert_eq!(b.open(&frames[477], &mut out), Err(Error::Replay));
        assert!(b.open(&frames[1499], &mut out).is_ok());
        assert_eq!(b.open(&frames[1500], &mut out), Err(Error::Replay));
    }

    #[test]
    fn replay_window_matches_a_set_model() {
        // Pseudo-random arrival pattern checked against a plain set with the same rules.
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut base = 0u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            base += x % 3;
            let c = (base + x % 1500).saturating_sub(700);
            let expected = match top {
                Some(t) if c <= t && t - c >= REPLAY_WINDOW => Err(Error::TooOld),
                _ if seen.contains(&c) => Err(Error::Replay),
                _ => Ok(()),
            };
            assert_eq!(w.check(c), expected, "counter {c} top {top:?}");
            if expected.is_ok() {
                w.update(c);
                seen.insert(c);
                top = Some(top.map_or(c, |t| t.max(c)));
            }
        }
    }

    #[test]
    fn buffer_and_size_limits() {
        let (mut a, mut b) = pair(false);
        let mut small = [0u8; 40];
        assert_eq!(a.seal(FrameType::Audio, &[0; 20], &mut small), Err(Error::BufferTooSmall));
        let mut big = [0u8; 5000];
        assert_eq!(a.seal(FrameType::Audio, &[0; 4067], &mut big), Err(Error::BufferTooSmall));
        let n = a.seal(FrameType::Audio, &[0; 100], &mut big).unwrap();
        assert_eq!(b.open(&big[..n], &mut small), Err(Error::BufferTooSmall));
    }
}
