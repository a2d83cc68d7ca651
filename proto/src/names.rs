//! Rules for human-readable text that one user shows to another: display names and hang-up reasons
//! (checked by the registry on the way in, and by the client on the way out of a registry it does not
//! trust), plus a look-alike check for usernames and display names.
//!
//! Text is refused when it contains anything that changes how the *surrounding* screen renders or that
//! cannot be seen: control characters, every Unicode format character (category Cf: the bidi overrides and
//! isolates U+202A-202E / U+2066-2069, the marks U+200E/U+200F/U+061C, zero-width spaces and joiners, the
//! BOM, tag characters), line and paragraph separators, private-use characters and noncharacters, white
//! space other than a plain space, Hangul fillers, more than three stacked combining marks, and leading or
//! trailing spaces. What is left renders left to right inside its own cell of a terminal row; a name can
//! still *look like* another, which [`lookalike`] is for.

/// Longest display name, in characters (the registry's limit).
pub const DISPLAY_NAME_MAX_CHARS: usize = 64;

/// Why a piece of text was refused. The `u32` is the offending code point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// More characters than allowed.
    #[error("is longer than {0} characters")]
    TooLong(usize),
    /// A C0/C1 control character (newline, escape, ...).
    #[error("contains the control character U+{0:04X}")]
    Control(u32),
    /// An invisible formatting character: bidi override or isolate, direction mark, zero-width character,
    /// BOM, tag character (Unicode category Cf), or a line/paragraph separator.
    #[error("contains the invisible formatting character U+{0:04X} (bidi control, zero-width or similar)")]
    Format(u32),
    /// A private-use character, a noncharacter or an invisible filler.
    #[error("contains the unusable character U+{0:04X} (private use, noncharacter or invisible filler)")]
    Unusable(u32),
    /// White space other than U+0020.
    #[error("contains white space other than a plain space (U+{0:04X})")]
    Whitespace(u32),
    /// Starts or ends with a space.
    #[error("starts or ends with a space")]
    Padding,
    /// More than [`MAX_STACKED_MARKS`] combining marks in a row.
    #[error("stacks more than 3 combining marks on one character")]
    Stacked,
}

/// Most combining marks allowed on one base character (Vietnamese needs two; "Zalgo" text uses dozens).
pub const MAX_STACKED_MARKS: usize = 3;

/// Unicode 16.0 general category Cf (format characters), as inclusive ranges.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// Blocks of combining marks (the common ones; used for the stacking limit and skipped by skeletons).
const COMBINING: &[(u32, u32)] =
    &[(0x0300, 0x036F), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x20D0, 0x20FF), (0xFE20, 0xFE2F)];

fn in_ranges(cp: u32, ranges: &[(u32, u32)]) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&cp))
}

/// Whether `c` is a Unicode format character (category Cf), e.g. U+202E RIGHT-TO-LEFT OVERRIDE.
pub fn is_format(c: char) -> bool {
    in_ranges(u32::from(c), FORMAT)
}

fn is_combining(c: char) -> bool {
    in_ranges(u32::from(c), COMBINING)
}

/// The reason `c` may not appear in shown text, if any (position-independent rules only).
fn refuse(c: char) -> Option<TextError> {
    let cp = u32::from(c);
    if c.is_control() {
        return Some(TextError::Control(cp));
    }
    if is_format(c) || matches!(cp, 0x2028 | 0x2029) {
        return Some(TextError::Format(cp));
    }
    let private = (0xE000..=0xF8FF).contains(&cp) || cp >= 0xF0000;
    let nonchar = (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFE == 0xFFFE;
    let filler = matches!(cp, 0x115F | 0x1160 | 0x3164 | 0xFFA0);
    if private || nonchar || filler {
        return Some(TextError::Unusable(cp));
    }
    if c.is_whitespace() && c != ' ' {
        return Some(TextError::Whitespace(cp));
    }
    None
}

/// Checks text one user shows another (a display name, a hang-up reason): at most `max_chars`
/// characters, none of the refused kinds listed in the module docs, no leading or trailing space.
/// The empty string is accepted (it means "no text").
///
/// Fails with the first problem found.
pub fn check_text(s: &str, max_chars: usize) -> Result<(), TextError> {
    let mut count = 0usize;
    let mut stacked = 0usize;
    for c in s.chars() {
        count += 1;
        if count > max_chars {
            return Err(TextError::TooLong(max_chars));
        }
        if let Some(e) = refuse(c) {
            return Err(e);
        }
        if is_combining(c) {
            stacked += 1;
            if stacked > MAX_STACKED_MARKS {
                return Err(TextError::Stacked);
            }
        } else {
            stacked = 0;
        }
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(TextError::Padding);
    }
    Ok(())
}

/// Checks a display name: [`check_text`] with [`DISPLAY_NAME_MAX_CHARS`].
///
/// Fails with the first problem found.
pub fn check_display_name(s: &str) -> Result<(), TextError> {
    check_text(s, DISPLAY_NAME_MAX_CHARS)
}

/// Makes untrusted text safe to show: every refused character becomes U+FFFD, stacked marks beyond the
/// limit are dropped, the text is trimmed and cut to `max_chars` characters. The result always passes
/// [`check_text`] with the same `max_chars`. For text from a registry that may not have checked it.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4));
    let mut count = 0usize;
    let mut stacked = 0usize;
    for c in s.trim_matches(' ').chars() {
        if count == max_chars {
            break;
        }
        let c = if refuse(c).is_some() { char::REPLACEMENT_CHARACTER } else { c };
        if is_combining(c) {
            stacked += 1;
            if stacked > MAX_STACKED_MARKS {
                continue;
            }
        } else {
            stacked = 0;
        }
        out.push(c);
        count += 1;
    }
    // Cutting may leave a trailing space; a leading one cannot appear after the trim.
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Latin look-alikes from Cyrillic and Greek, mapped to the Latin letter they imitate (lower case).
const HOMOGLYPHS: &[(char, char)] = &[
    ('а', 'a'),
    ('в', 'b'),
    ('е', 'e'),
    ('ё', 'e'),
    ('і', 'i'),
    ('ј', 'j'),
    ('к', 'k'),
    ('м', 'm'),
    ('н', 'h'),
    ('о', 'o'),
    ('р', 'p'),
    ('с', 'c'),
    ('т', 't'),
    ('у', 'y'),
    ('х', 'x'),
    ('ѕ', 's'),
    ('ԁ', 'd'),
    ('һ', 'h'),
    ('ԛ', 'q'),
    ('ԝ', 'w'),
    ('ɡ', 'g'),
    ('α', 'a'),
    ('β', 'b'),
    ('ε', 'e'),
    ('ζ', 'z'),
    ('η', 'n'),
    ('ι', 'i'),
    ('κ', 'k'),
    ('μ', 'u'),
    ('ν', 'v'),
    ('ο', 'o'),
    ('ρ', 'p'),
    ('τ', 't'),
    ('υ', 'u'),
    ('χ', 'x'),
];

/// A comparison key under which names that look alike on a terminal are equal: upper-case `I` and `|`
/// count as `l`, case is folded, Cyrillic and Greek letters that imitate Latin ones become those letters,
/// `0` is `o` and `1` is `l`, spaces, `_`, `-`, `.` and combining marks are ignored, and `rn`, `vv`, `cl`
/// read as `m`, `w`, `d`. Not a full UTS #39 skeleton: scripts beyond Latin, Cyrillic and Greek are
/// compared as written.
pub fn skeleton(s: &str) -> String {
    let mut folded = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, ' ' | '_' | '-' | '.') || is_combining(c) || refuse(c).is_some() {
            continue;
        }
        if matches!(c, 'I' | '|' | '1') {
            folded.push('l');
            continue;
        }
        for lc in c.to_lowercase() {
            let lc = HOMOGLYPHS.iter().find(|(h, _)| *h == lc).map_or(lc, |&(_, l)| l);
            folded.push(match lc {
                '0' => 'o',
                other => other,
            });
        }
    }
    folded.replace("rn", "m").replace("vv", "w").replace("cl", "d")
}

/// If the user `username` (showing `display_name`) looks like one of the `known` users (username,
/// display name) without being that user, returns the known username it imitates: their usernames have
/// the same [`skeleton`], or the display name's skeleton equals a known user's username or display-name
/// skeleton. The front end marks such a user ("looks like bob") wherever it shows them. `known` is
/// normally the pinned contacts.
pub fn lookalike<'a>(
    username: &str,
    display_name: Option<&str>,
    known: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<&'a str> {
    let user_key = skeleton(username);
    let display_key = display_name.map(skeleton).filter(|k| !k.is_empty());
    for (other, other_display) in known {
        if other == username {
            continue;
        }
        let other_key = skeleton(other);
        if other_key == user_key {
            return Some(other);
        }
        if let Some(dk) = &display_key {
            let other_display_key = other_display.map(skeleton).filter(|k| !k.is_empty());
            if *dk == other_key || other_display_key.as_ref() == Some(dk) {
                return Some(other);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_and_format_characters_are_refused() {
        for (s, cp) in [
            ("evil\u{202E}gnp.exe", 0x202E),
            ("a\u{2066}b", 0x2066),
            ("a\u{200F}", 0x200F),
            ("x\u{061C}y", 0x061C),
            ("zero\u{200B}width", 0x200B),
            ("bom\u{FEFF}", 0xFEFF),
            ("tag\u{E0041}", 0xE0041),
            ("soft\u{AD}hyphen", 0xAD),
            ("line\u{2028}sep", 0x2028),
        ] {
            assert_eq!(check_display_name(s), Err(TextError::Format(cp)), "{s:?}");
        }
        assert_eq!(check_display_name("a\nb"), Err(TextError::Control(0x0A)));
        assert_eq!(check_display_name("a\u{1b}[31m"), Err(TextError::Control(0x1B)));
        assert_eq!(check_display_name("nb\u{A0}sp"), Err(TextError::Whitespace(0xA0)));
        assert_eq!(check_display_name("\u{3164}"), Err(TextError::Unusable(0x3164)));
        assert_eq!(check_display_name("pua\u{E000}"), Err(TextError::Unusable(0xE000)));
        assert_eq!(check_display_name("non\u{FFFF}"), Err(TextError::Unusable(0xFFFF)));
        assert_eq!(check_display_name(" Bob"), Err(TextError::Padding));
        assert_eq!(check_display_name("z\u{301}\u{302}\u{303}\u{304}"), Err(TextError::Stacked));
        assert_eq!(check_display_name(&"x".repeat(65)), Err(TextError::TooLong(64)));
    }

    #[test]
    fn ordinary_names_in_any_script_pass() {
        for s in ["", "Alice", "Bob Smith", "José Ñúñez", "Nguyễn Văn A", "Дмитрий", "李小龍", "محمد", "👩‍💻 dev"]
        {
            // The emoji uses a zero-width joiner (Cf): refused. Everything else passes.
            let r = check_display_name(s);
            if s.contains('\u{200D}') {
                assert_eq!(r, Err(TextError::Format(0x200D)));
            } else {
                assert_eq!(r, Ok(()), "{s:?}");
            }
        }
        assert!(check_display_name(&"é".repeat(64)).is_ok());
    }

    #[test]
    fn sanitize_always_yields_acceptable_text() {
        for s in [" \u{202E}evil ", "a\u{0}b", &"w".repeat(100), "x\u{300}\u{300}\u{300}\u{300}\u{300}", " a   "] {
            let out = sanitize(s, 64);
            assert_eq!(check_text(&out, 64), Ok(()), "{s:?} -> {out:?}");
        }
        assert_eq!(sanitize("evil\u{202E}txt", 64), "evil\u{FFFD}txt");
        assert_eq!(sanitize("abc", 2), "ab");
    }

    #[test]
    fn lookalikes_of_contacts_are_found() {
        let known = [("bob", Some("Bob")), ("alice", None), ("martin", Some("Martin K"))];
        assert_eq!(lookalike("b0b", Some("Bob"), known), Some("bob"));
        assert_eq!(lookalike("b0b", None, known), Some("bob"));
        assert_eq!(lookalike("bob_", None, known), Some("bob"));
        assert_eq!(lookalike("a1ice", None, known), Some("alice"));
        assert_eq!(lookalike("rnartin", None, known), Some("martin"));
        assert_eq!(lookalike("mallory", Some("Bob"), known), Some("bob"));
        assert_eq!(lookalike("mallory", Some("Воb"), known), Some("bob")); // Cyrillic В and о
        assert_eq!(lookalike("mallory", Some("BOB"), known), Some("bob"));
        assert_eq!(lookalike("bob", Some("Bob"), known), None, "the contact itself");
        assert_eq!(lookalike("carol", Some("Carol"), known), None);
        assert_eq!(lookalike("eve", Some(""), known), None);
    }
}
