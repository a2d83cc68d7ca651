//! Fuzzes chunk opening: `ChunkCipher::open` on raw bytes at any index, and `StreamOpener` over programs of
//! genuine, edited, repeated, reordered, truncated and extended chunks of the fixture's three-chunk file.
//!
//! The first input byte picks a mode:
//! - even: `(index u8, bytes)` to `ChunkCipher::open`. With fixed keys libFuzzer's comparison tracing can
//!   learn a valid GCM tag (see README), so an opened raw chunk is checked for consistency, not called a
//!   forgery: it must open the same way twice and have the manifest's length for its index.
//! - odd: a program; each step feeds the stream opener either genuine chunk `k` (any k, so reordering,
//!   repeats and skipped chunks happen) with up to 4 byte edits, or a truncation or extension of it.
//!
//! Properties: nothing panics; the opener accepts a step iff it is exactly the next genuine chunk, and a
//! refused step leaves it where it was; `finish` succeeds iff every chunk was accepted, and then the
//! plaintext is the fixture's.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qvoice_proto::file::StreamOpener;
use qvoice_proto_fuzz::{Cursor, file_transfer, xor_edits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let fx = file_transfer();
    let cipher = fx.keys.cipher(&fx.manifest);
    let mut out = Vec::new();
    if mode % 2 == 0 {
        let mut cur = Cursor::new(rest);
        let index = u32::from(cur.u8() % 5);
        let bytes = cur.rest();
        if cipher.open(index, bytes, &mut out).is_ok() {
            assert_eq!(Some(bytes.len()), fx.manifest.chunk_wire_len(index));
            let mut again = Vec::new();
            assert!(cipher.open(index, bytes, &mut again).is_ok());
            assert_eq!(out, again);
        } else {
            assert!(out.is_empty(), "a refused chunk left plaintext in the buffer");
        }
        return;
    }
    let mut cur = Cursor::new(rest);
    let mut opener = StreamOpener::new(cipher, &fx.meta);
    let mut plain = Vec::new();
    for _ in 0..8 {
        if cur.is_empty() {
            break;
        }
        let k = usize::from(cur.u8()) % fx.chunks.len();
        let genuine = &fx.chunks[k];
        let mut chunk = genuine.clone();
        let shape = cur.u8();
        match shape % 8 {
            0 => chunk.truncate(usize::from(cur.u16()) % (chunk.len() + 1)),
            1 => chunk.extend(std::iter::repeat_n(shape, usize::from(cur.u8()) + 1)),
            2 | 3 => xor_edits(&mut cur, &mut chunk, 4),
            _ => {}
        }
        let next = opener.next_index() as usize;
        let expected = k == next && chunk == *genuine;
        match opener.open_next(&chunk, &mut out) {
            Ok(()) => {
                assert!(expected, "chunk {k} (changed: {}) accepted at position {next}", chunk != *genuine);
                plain.extend_from_slice(&out);
            }
            Err(_) => {
                assert!(!expected, "genuine chunk {k} refused at position {next}");
                assert_eq!(opener.next_index() as usize, next, "a refused chunk moved the opener");
            }
        }
    }
    let all = opener.next_index() as usize == fx.chunks.len();
    assert_eq!(opener.finish().is_ok(), all);
    if all {
        assert_eq!(plain, fx.plaintext);
    }
});
