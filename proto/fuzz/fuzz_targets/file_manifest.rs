//! Fuzzes file manifest parsing and verification: `Manifest::parse`, `verify`, the chunk-size accessors,
//! and `open_manifest` on mutations of a genuine manifest.
//!
//! The first input byte picks a mode:
//! - even: the rest is one candidate manifest, as a registry could serve it.
//! - odd: the fixture's genuine manifest with up to 8 byte edits and an optional truncation or extension,
//!   so the fuzzer reaches the signature, key exchange and sealed-metadata checks.
//!
//! Properties: nothing panics; whatever parses re-encodes to exactly the input and parses again to an equal
//! value; the chunk lengths it declares add up to its size and its wire size; a changed manifest never
//! verifies (so it cannot open: `open_manifest` checks the signature first); the genuine one verifies and
//! opens to the fixture's name and checksum.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qvoice_proto::Username;
use qvoice_proto::file::{Manifest, TAG_LEN, open_manifest};
use qvoice_proto_fuzz::{Cursor, file_transfer, xor_edits};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        check(rest, false);
        return;
    }
    let fx = file_transfer();
    let genuine = fx.manifest.to_bytes().to_vec();
    let mut cur = Cursor::new(rest);
    let mut msg = genuine.clone();
    let resize = cur.u8();
    let n = usize::from(cur.u16());
    match resize % 8 {
        0 => msg.truncate(n % (msg.len() + 1)),
        1 => msg.extend(std::iter::repeat_n(resize, n % 64 + 1)),
        _ => {}
    }
    xor_edits(&mut cur, &mut msg, 8);
    let opened = check(&msg, true);
    assert_eq!(opened, msg == genuine, "a changed manifest opened, or the genuine one did not: {msg:02x?}");
});

/// Parses `bytes`; returns whether it verified and opened for the fixture's recipient (only tried when
/// `open` is set: ML-KEM decapsulation is slow).
fn check(bytes: &[u8], open: bool) -> bool {
    let Ok(m) = Manifest::parse(bytes) else { return false };
    assert_eq!(m.to_bytes(), bytes);
    assert_eq!(Manifest::parse(m.to_bytes()).ok().as_ref(), Some(&m));
    let total: u64 = (0..m.chunk_count).map(|i| m.chunk_plain_len(i).expect("index below count") as u64).sum();
    assert_eq!(total, m.size);
    assert_eq!(m.wire_size(), m.size + u64::from(m.chunk_count) * TAG_LEN as u64);
    assert_eq!(m.chunk_plain_len(m.chunk_count), None);
    let verified = m.verify().is_ok();
    if !open || !verified {
        return false;
    }
    let fx = file_transfer();
    // A manifest that verifies but is not the genuine one would be a forgery: fail here. The genuine one is
    // opened once per process (ML-KEM decapsulation under the sanitizer would otherwise dominate).
    assert_eq!(m.to_bytes(), fx.manifest.to_bytes(), "a changed manifest verified");
    static GENUINE_OPENS: OnceLock<bool> = OnceLock::new();
    *GENUINE_OPENS.get_or_init(|| {
        let bob = Username::parse("bob").expect("fixture username");
        match open_manifest(&m, &fx.bob, &bob, std::slice::from_ref(&fx.bob_prekey)) {
            Ok((meta, _)) => meta == fx.meta,
            Err(_) => false,
        }
    })
}
