//! Fuzzes the rules for text users show each other (`qvoice_proto::names`): display-name and reason
//! checks, sanitizing of untrusted text, skeletons and the look-alike check.
//!
//! Properties: nothing panics; accepted text contains no control, format (bidi, zero-width) or other
//! refused character and no more characters than allowed; `sanitize` output is always accepted and
//! sanitizing is idempotent; a name never looks like itself, and look-alike is symmetric for usernames.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qvoice_proto::names::{check_display_name, check_text, is_format, lookalike, sanitize, skeleton};

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else { return };
    let max = usize::from(max % 80);
    let s = String::from_utf8_lossy(rest);
    if check_text(&s, max).is_ok() {
        assert!(s.chars().count() <= max);
        assert!(!s.chars().any(|c| c.is_control() || is_format(c)), "{s:?}");
        assert!(!s.starts_with(' ') && !s.ends_with(' '));
    }
    let clean = sanitize(&s, max);
    assert_eq!(check_text(&clean, max), Ok(()), "{s:?} -> {clean:?}");
    assert_eq!(sanitize(&clean, max), clean);
    let _ = check_display_name(&s);
    let _ = skeleton(&s);
    let mid = (s.len() / 2..=s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(s.len());
    let (a, b) = s.split_at(mid);
    assert_eq!(lookalike(a, Some(b), [(a, Some(b))]), None);
    let ab = lookalike(a, None, [(b, None)]).is_some();
    let ba = lookalike(b, None, [(a, None)]).is_some();
    assert_eq!(ab, ba, "{a:?} {b:?}");
});
