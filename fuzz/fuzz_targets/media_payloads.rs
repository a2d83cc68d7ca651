//! Fuzzes the media payload parsers that run on authenticated frames from the peer (`AudioPayload`,
//! `Probe`, `StatsReport`, `Bye` in `qvoice_proto::frame`) and the frame header peek that runs on every
//! datagram before any cryptography.
//!
//! Properties: nothing panics; what parses re-encodes to exactly the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qvoice_proto::frame::{AudioPayload, Bye, Probe, StatsReport, peek_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = AudioPayload::parse(data) {
        let mut out = vec![0u8; data.len()];
        assert_eq!(a.write_to(&mut out), Ok(data.len()));
        assert_eq!(out, data);
    }
    if let Ok(p) = Probe::parse(data) {
        assert_eq!(p.to_bytes().as_slice(), data);
    }
    if let Ok(s) = StatsReport::parse(data) {
        assert_eq!(s.to_bytes().as_slice(), data);
    }
    if let Ok(b) = Bye::parse(data) {
        assert_eq!([b as u8].as_slice(), data);
    }
    let _ = peek_header(data);
});
