//! Byte reader and writer for the handshake encodings: big-endian integers, length-prefixed strings.

use crate::Error;

/// Cursor over untrusted bytes; every read checks the length and names the field on failure.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        let end = self.pos.checked_add(n).ok_or(Error::Malformed(field))?;
        let out = self.buf.get(self.pos..end).ok_or(Error::Malformed(field))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A string of at most 255 bytes with a one-byte length prefix.
    pub(crate) fn short_str(&mut self, field: &'static str) -> Result<&'a str, Error> {
        let len = usize::from(self.u8(field)?);
        std::str::from_utf8(self.bytes(len, field)?).map_err(|_| Error::Malformed(field))
    }

    pub(crate) fn finish(&self, field: &'static str) -> Result<(), Error> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(Error::Malformed(field)) }
    }
}

/// Appends big-endian fields to a growable buffer (handshake messages are built once per call).
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// Callers only pass validated usernames (at most 32 bytes), so the length always fits.
    pub(crate) fn short_str(&mut self, s: &str) -> &mut Self {
        let len = u8::try_from(s.len()).unwrap_or(u8::MAX);
        self.u8(len).bytes(&s.as_bytes()[..usize::from(len)])
    }
}
