//! Fuzzes the media datagram path: `frame::peek_header` and `MediaCrypto::open` with fixed keys.
//!
//! The first input byte picks a mode:
//! - even: the rest is one raw datagram. It must never panic; `open` fails with `peek_header`'s error
//!   whenever that fails; a datagram that opens agrees with its header and is refused as a replay the
//!   second time; it is also opened into a too-small buffer.
//! - odd: a small program over genuine frames. Seal frames (any size up to the seed's 2048 bytes and
//!   beyond, with or without obfuscation), skip counters, deliver frames in any order, deliver them with
//!   bit flips or changed lengths. Checked against a model: an untouched frame opens exactly once while
//!   inside the replay window and returns its payload; a changed frame never opens and changes no state.
//!   (Four byte edits cannot also rebuild a 16-byte tag, so an opened changed frame would be a real bug.)

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use qvoice_proto::frame::{self, MAX_DATAGRAM, MAX_PAYLOAD, OVERHEAD};
use qvoice_proto::media::REPLAY_WINDOW;
use qvoice_proto::{Error, FrameType, MediaCrypto};
use qvoice_proto_fuzz::{Cursor, RECV_SESSION, media_pair, xor_edits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 { raw_datagram(mode, rest) } else { sealed_program(mode, rest) }
});

fn raw_datagram(mode: u8, datagram: &[u8]) {
    let header = frame::peek_header(datagram);
    let (_, mut rx) = media_pair(mode & 2 != 0);
    let mut out = vec![0u8; MAX_DATAGRAM];
    match rx.open(datagram, &mut out) {
        // The keys are fixed and libFuzzer watches comparisons, so it learns a valid tag within seconds:
        // an opened raw datagram is expected, not a forgery. It must agree with its header, and the
        // replay window must refuse it the second time.
        Ok(o) => {
            let h = header.expect("an opened datagram has a valid header");
            assert_eq!((o.ftype, o.counter, o.payload.len()), (h.ftype, h.counter, datagram.len() - OVERHEAD));
            assert_eq!(h.session, RECV_SESSION);
            assert_eq!(rx.open(datagram, &mut out).err(), Some(Error::Replay));
            return;
        }
        Err(e) => {
            if let Err(he) = header {
                assert_eq!(e, he);
            }
        }
    }
    // The same datagram into a buffer shorter than its payload.
    let short = datagram.len().saturating_sub(OVERHEAD + 1);
    assert!(rx.open(datagram, &mut out[..short]).is_err());
}

const FTYPES: [FrameType; 6] =
    [FrameType::Audio, FrameType::Probe, FrameType::ProbeAck, FrameType::Stats, FrameType::Bye, FrameType::Keepalive];

struct Sealed {
    wire: Vec<u8>,
    payload: Vec<u8>,
    ftype: FrameType,
    counter: u64,
}

/// What the receiver's replay window should say, kept as a plain set.
#[derive(Default)]
struct Model {
    seen: BTreeSet<u64>,
    top: Option<u64>,
}

impl Model {
    fn expect(&self, c: u64) -> Result<(), Error> {
        match self.top {
            Some(t) if c <= t && t - c >= REPLAY_WINDOW => Err(Error::TooOld),
            _ if self.seen.contains(&c) => Err(Error::Replay),
            _ => Ok(()),
        }
    }

    fn accept(&mut self, c: u64) {
        self.seen.insert(c);
        self.top = Some(self.top.map_or(c, |t| t.max(c)));
    }
}

fn sealed_program(mode: u8, input: &[u8]) {
    let mut cur = Cursor::new(input);
    let (mut tx, mut rx) = media_pair(mode & 2 != 0);
    let mut frames: Vec<Sealed> = Vec::new();
    let mut model = Model::default();
    let mut out = vec![0u8; MAX_DATAGRAM];
    let mut scratch = vec![0u8; MAX_DATAGRAM];
    // Bounded so one input stays fast however long it is.
    for _ in 0..64 {
        if cur.is_empty() {
            break;
        }
        match cur.u8() % 6 {
            0 => seal(&mut cur, &mut tx, &mut frames, &mut scratch),
            1 => {
                // Skip counters (frames lost on the way), up to past the replay window.
                for _ in 0..usize::from(cur.u16()) % 1200 {
                    let _ = tx.seal(FrameType::Keepalive, &[], &mut scratch);
                }
            }
            2 => tx.set_obfuscation(!tx.obfuscation()),
            3 => {
                let Some(f) = pick(&mut cur, &frames) else { continue };
                deliver_untouched(f, &mut rx, &mut model, &mut out);
            }
            4 => {
                let Some(f) = pick(&mut cur, &frames) else { continue };
                let mut bad = f.wire.clone();
                xor_edits(&mut cur, &mut bad, 4);
                deliver_changed(f, &bad, &mut rx, &mut model, &mut out);
            }
            _ => {
                let Some(f) = pick(&mut cur, &frames) else { continue };
                let mut bad = f.wire.clone();
                let n = usize::from(cur.u16());
                if cur.u8() % 2 == 0 {
                    bad.truncate(n % (bad.len() + 1));
                } else {
                    bad.extend(std::iter::repeat_n(cur.u8(), n % 64 + 1));
                }
                deliver_changed(f, &bad, &mut rx, &mut model, &mut out);
            }
        }
    }
}

fn seal(cur: &mut Cursor<'_>, tx: &mut MediaCrypto, frames: &mut Vec<Sealed>, scratch: &mut [u8]) {
    let ftype = FTYPES[usize::from(cur.u8()) % FTYPES.len()];
    // Up to MAX_PAYLOAD + 8: the last few sizes must be refused.
    let len = usize::from(cur.u16()) % (MAX_PAYLOAD + 9);
    let fill = cur.u8();
    let payload: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
    let counter = tx.next_counter();
    match tx.seal(ftype, &payload, scratch) {
        Ok(n) => {
            assert!(len <= MAX_PAYLOAD);
            assert_eq!(n, len + OVERHEAD);
            let wire = scratch[..n].to_vec();
            let h = frame::peek_header(&wire).expect("a sealed frame has a valid header");
            assert_eq!((h.ftype, h.session, h.counter), (ftype, RECV_SESSION, counter));
            assert_eq!(tx.next_counter(), counter + 1);
            frames.push(Sealed { wire, payload, ftype, counter });
        }
        Err(e) => {
            assert!(len > MAX_PAYLOAD, "seal of {len} bytes failed: {e:?}");
            assert_eq!(e, Error::BufferTooSmall);
            assert_eq!(tx.next_counter(), counter, "a failed seal must not use up a counter");
        }
    }
}

fn pick<'f>(cur: &mut Cursor<'_>, frames: &'f [Sealed]) -> Option<&'f Sealed> {
    if frames.is_empty() { None } else { frames.get(usize::from(cur.u8()) % frames.len()) }
}

fn deliver_untouched(f: &Sealed, rx: &mut MediaCrypto, model: &mut Model, out: &mut [u8]) {
    let expected = model.expect(f.counter);
    match rx.open(&f.wire, out) {
        Ok(o) => {
            assert_eq!(expected, Ok(()), "frame {} opened but the model says {expected:?}", f.counter);
            assert_eq!((o.ftype, o.counter, o.payload), (f.ftype, f.counter, &f.payload[..]));
            model.accept(f.counter);
        }
        Err(e) => assert_eq!(Err(e), expected, "frame {}", f.counter),
    }
}

fn deliver_changed(f: &Sealed, bad: &[u8], rx: &mut MediaCrypto, model: &mut Model, out: &mut [u8]) {
    if bad == &f.wire[..] {
        return deliver_untouched(f, rx, model, out);
    }
    let _ = frame::peek_header(bad);
    let opened = rx.open(bad, out);
    assert!(opened.is_err(), "a changed frame of counter {} opened (forgery): {opened:?}", f.counter);
    // A failed open changes no state: the genuine frame is still judged by the model. Probing with an
    // empty output buffer runs every check before decryption without consuming the frame (unless its
    // payload is empty, in which case it opens and the model records it).
    let expected = model.expect(f.counter);
    match rx.open(&f.wire, &mut []) {
        Ok(o) => {
            assert_eq!(expected, Ok(()));
            assert!(f.payload.is_empty() && o.payload.is_empty());
            model.accept(f.counter);
        }
        Err(Error::BufferTooSmall) => assert_eq!(expected, Ok(()), "frame {}", f.counter),
        Err(e) => assert_eq!(Err(e), expected, "frame {}", f.counter),
    }
}
