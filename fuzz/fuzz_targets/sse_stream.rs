//! Fuzzes the client's Server-Sent Events parser (`src/session/sse.rs`, included as is).
//!
//! The first byte picks a mode:
//! - 1 mod 16: the rest is repeated until it is larger than the parser's limits, to reach the
//!   oversized-line and oversized-event paths (rare: each such input parses ~400 KB).
//! - any other value: the rest is a stream, fed in chunks whose sizes come from the next bytes. Checked
//!   against a whole-input reference parser written from the WHATWG rules (normalise CRLF and CR to LF,
//!   split lines, `data` fields joined by LF, blank line dispatches): the same events, whatever the chunking.
//!
//! Properties: nothing panics; the bytes held between calls never exceed `MAX_LINE + MAX_EVENT`; within
//! the limits the events equal the reference's; chunking never changes the result.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/session/sse.rs"]
mod sse;

use sse::{MAX_EVENT, MAX_LINE, SseParser};

fn reference(input: &[u8]) -> Vec<String> {
    let mut text = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                text.push(b'\n');
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => text.push(b),
        }
        i += 1;
    }
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    lines.pop(); // the last piece has no line end yet
    let (mut out, mut data, mut has) = (Vec::new(), String::new(), false);
    for line in lines {
        if line.is_empty() {
            if has {
                data.pop();
                out.push(std::mem::take(&mut data));
            }
            data.clear();
            has = false;
        } else if line[0] != b':' {
            let (f, v) = match line.iter().position(|&b| b == b':') {
                Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
                None => (line, &[][..]),
            };
            if f == b"data" {
                has = true;
                data.push_str(&String::from_utf8_lossy(v));
                data.push('\n');
            }
        }
    }
    out
}

fn feed(p: &mut SseParser, input: &[u8], sizes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes.get(k).map_or(rest.len(), |&s| usize::from(s).max(1)).min(rest.len());
        k += 1;
        let (chunk, tail) = rest.split_at(n);
        out.extend(p.push(chunk));
        assert!(p.buffered() <= MAX_LINE + MAX_EVENT, "{} bytes held", p.buffered());
        rest = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 16 == 1 {
        // Rare (each costs ~0.4 MB of parsing): just past both limits.
        if rest.is_empty() {
            return;
        }
        let big: Vec<u8> = rest.iter().copied().cycle().take((MAX_LINE + MAX_EVENT + 4096).max(rest.len())).collect();
        let mut p = SseParser::default();
        let mut chunks = big.chunks(usize::from(mode) * 1024 + 1);
        for c in &mut chunks {
            let _ = p.push(c);
            assert!(p.buffered() <= MAX_LINE + MAX_EVENT, "{} bytes held", p.buffered());
        }
        return;
    }
    let split = rest.len().min(16);
    let (sizes, stream) = rest.split_at(split);
    let whole = SseParser::default().push(stream);
    let mut p = SseParser::default();
    let chunked = feed(&mut p, stream, sizes);
    assert_eq!(chunked, whole, "chunking changed the events");
    assert_eq!(whole, reference(stream), "differs from the reference parser");
});
