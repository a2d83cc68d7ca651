//! Incremental, bounded Server-Sent Events parser for the registry's `/events` stream (WHATWG "event
//! stream interpretation": lines end in LF, CRLF or CR; `data:` lines of one event are joined with LF; a
//! blank line dispatches; `:` lines are comments; other fields are ignored).
//!
//! The registry is not trusted to be well behaved, so memory is bounded whatever it sends: a line longer
//! than [`MAX_LINE`] bytes and an event whose data grows past [`MAX_EVENT`] bytes are dropped (and
//! counted), the rest of the stream is still parsed. The parser holds at most `MAX_LINE + MAX_EVENT`
//! bytes between calls, and its work is linear in the input. Bytes are split into lines before UTF-8
//! decoding, so a character split across network chunks is decoded intact.
//!
//! Pure std, no I/O: the client's fuzz target includes this file as is.

/// Longest line kept, in bytes (the largest registry event, `ready` with 1000 names, is ~40 KiB).
pub const MAX_LINE: usize = 128 * 1024;
/// Largest event data kept, in bytes.
pub const MAX_EVENT: usize = 256 * 1024;

/// The parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current, incomplete line.
    line: Vec<u8>,
    /// The current line is over [`MAX_LINE`]: skip to its end.
    skipping_line: bool,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// Data of the current event, lines joined with LF (one trailing LF while open).
    data: String,
    /// Whether the current event had a `data` field.
    has_data: bool,
    /// The current event lost a line or grew too large: drop it at dispatch.
    broken: bool,
    dropped: u64,
}

impl SseParser {
    /// Feeds bytes; returns the data payloads of the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.extend_line(&rest[..pos]);
            let is_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            self.end_line(&mut out);
        }
        self.extend_line(rest);
        out
    }

    /// Events dropped so far for being too large.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes held between calls (bounded by `MAX_LINE + MAX_EVENT`).
    pub fn buffered(&self) -> usize {
        self.line.len() + self.data.len()
    }

    fn extend_line(&mut self, part: &[u8]) {
        if self.skipping_line {
            return;
        }
        if self.line.len() + part.len() > MAX_LINE {
            self.line = Vec::new();
            self.skipping_line = true;
            self.broken = true;
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self, out: &mut Vec<String>) {
        if self.skipping_line {
            self.skipping_line = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        if field != b"data" {
            return;
        }
        self.has_data = true;
        if self.broken {
            return;
        }
        if self.data.len() + value.len() + 1 > MAX_EVENT {
            self.broken = true;
            self.data = String::new();
            return;
        }
        self.data.push_str(&String::from_utf8_lossy(value));
        self.data.push('\n');
    }

    fn dispatch(&mut self, out: &mut Vec<String>) {
        let mut data = std::mem::take(&mut self.data);
        let (has_data, broken) = (self.has_data, self.broken);
        self.has_data = false;
        self.broken = false;
        if broken {
            self.dropped += 1;
            return;
        }
        if has_data {
            data.pop();
            out.push(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_chunks_comments_multiline_data_and_line_endings() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: ready\ndata: {\"a\"").is_empty());
        assert_eq!(p.push(b":1}\n\n: keep-alive\n\nevent: x\ndata: l1\ndata: l2\n\n"), vec!["{\"a\":1}", "l1\nl2"]);
        assert_eq!(p.push(b"data:x\r\n\r\ndata: y\r\rdata\n\n"), vec!["x", "y", ""]);
        // CR at the end of one chunk, LF at the start of the next: one line end.
        assert!(p.push(b"data: z\r").is_empty());
        assert!(p.push(b"\n").is_empty());
        assert_eq!(p.push(b"\r\n"), vec!["z"]);
        // A character split across chunks.
        let e = "data: é\n\n".as_bytes();
        assert!(p.push(&e[..7]).is_empty());
        assert_eq!(p.push(&e[7..]), vec!["é"]);
    }

    #[test]
    fn memory_stays_bounded_on_data_lines_without_a_blank_line() {
        // The finding: `data: x\n` forever grew the client from 1.7 to 61 MB in 18 s.
        let mut p = SseParser::default();
        let chunk = b"data: x\n".repeat(8 * 1024);
        for _ in 0..256 {
            assert!(p.push(&chunk).is_empty());
            assert!(p.buffered() <= MAX_EVENT + MAX_LINE, "{}", p.buffered());
        }
        // The oversized event is dropped at its end; the stream goes on.
        assert_eq!(p.push(b"\ndata: ok\n\n"), vec!["ok"]);
        assert_eq!(p.dropped(), 1);
    }

    #[test]
    fn an_endless_line_is_dropped_with_its_event() {
        let mut p = SseParser::default();
        p.push(b"data: keep\ndata: ");
        for _ in 0..64 {
            p.push(&[b'a'; 64 * 1024]);
            assert!(p.buffered() <= MAX_EVENT + MAX_LINE);
        }
        assert_eq!(p.push(b"\n\ndata: next\n\n"), vec!["next"]);
        assert_eq!(p.dropped(), 1);
    }
}
