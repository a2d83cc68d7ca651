//! Key bindings as data: the `[tui]` config table, parsed once into [`KeySpec`]s so a typo in the config file
//! fails at load time with the field name and a list of valid key names, not silently at the first key press.

use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::{Deserialize, Serialize};

/// Why a key binding or the `[tui]` table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key name that is not a single character or one of the named keys.
    #[error(
        "unknown key {0:?}: use a single character (\"d\", \"R\", \"?\"), a named key (enter, esc, tab, space, \
         backspace, delete, up, down, left, right, home, end, pageup, pagedown, f1..f12), optionally prefixed \
         with ctrl- or alt- (\"ctrl-c\"); separate several keys for one action with spaces"
    )]
    Unknown(String),
    /// A binding with no key at all.
    #[error("empty key binding: give at least one key, e.g. \"d\"")]
    Empty,
    /// Two actions that are active at the same time share a key.
    #[error("key {key:?} is bound to both `{first}` and `{second}` in [tui.keys]: give one of them another key")]
    Conflict { key: String, first: &'static str, second: &'static str },
    /// The TOML did not parse or had an unknown field.
    #[error("invalid [tui] config: {0}")]
    Toml(String),
}

/// One key with its modifiers, e.g. `ctrl-c` or `R`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyChord {
    pub code: KeyCode,
    pub ctrl: bool,
    pub alt: bool,
}

impl KeyChord {
    /// Parses one key name; fails on anything [`KeyError::Unknown`] lists as invalid.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let unknown = || KeyError::Unknown(s.to_string());
        let mut rest = s;
        let (mut ctrl, mut alt) = (false, false);
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.chars().count() > 1 && lower.starts_with("ctrl-") {
                ctrl = true;
                rest = &rest[5..];
            } else if rest.chars().count() > 1 && lower.starts_with("alt-") {
                alt = true;
                rest = &rest[4..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (None, _) => return Err(unknown()),
            (Some(c), None) if !c.is_control() && c != ' ' => {
                // Ctrl combinations arrive as lowercase letters.
                KeyCode::Char(if ctrl { c.to_ascii_lowercase() } else { c })
            }
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "space" => KeyCode::Char(' '),
                "backspace" => KeyCode::Backspace,
                "delete" | "del" => KeyCode::Delete,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "pageup" => KeyCode::PageUp,
                "pagedown" => KeyCode::PageDown,
                f if f.starts_with('f') => match f[1..].parse::<u8>() {
                    Ok(n @ 1..=12) => KeyCode::F(n),
                    _ => return Err(unknown()),
                },
                _ => return Err(unknown()),
            },
        };
        Ok(Self { code, ctrl, alt })
    }

    /// Whether a terminal key press is this chord. Shift is ignored for characters: the terminal already
    /// reports `R` or `?` as the shifted character.
    pub fn matches(&self, key: &KeyEvent) -> bool {
        if key.kind == KeyEventKind::Release {
            return false;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let code = match key.code {
            KeyCode::Char(c) if ctrl => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        code == self.code && ctrl == self.ctrl && alt == self.alt
    }
}

impl fmt::Display for KeyChord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Enter => f.write_str("enter"),
            KeyCode::Esc => f.write_str("esc"),
            KeyCode::Tab => f.write_str("tab"),
            KeyCode::Backspace => f.write_str("backspace"),
            KeyCode::Delete => f.write_str("delete"),
            KeyCode::Up => f.write_str("up"),
            KeyCode::Down => f.write_str("down"),
            KeyCode::Left => f.write_str("left"),
            KeyCode::Right => f.write_str("right"),
            KeyCode::Home => f.write_str("home"),
            KeyCode::End => f.write_str("end"),
            KeyCode::PageUp => f.write_str("pageup"),
            KeyCode::PageDown => f.write_str("pagedown"),
            KeyCode::F(n) => write!(f, "f{n}"),
            _ => f.write_str("?"),
        }
    }
}

/// The keys bound to one action; written in config as one string, several keys separated by spaces
/// (`quit = "q ctrl-c"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeySpec(Vec<KeyChord>);

impl KeySpec {
    /// Parses a space-separated list of key names; fails if it is empty or any name is unknown.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let chords = s.split_whitespace().map(KeyChord::parse).collect::<Result<Vec<_>, _>>()?;
        if chords.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(chords))
    }

    pub fn chords(&self) -> &[KeyChord] {
        &self.0
    }

    pub fn matches(&self, key: &KeyEvent) -> bool {
        self.0.iter().any(|c| c.matches(key))
    }

    /// The first key, as shown in the footer.
    pub fn primary(&self) -> String {
        self.0.first().map(|c| c.to_string()).unwrap_or_default()
    }

    /// Built-in defaults are valid by construction; a bad one would be caught by the unit tests.
    fn builtin(s: &str) -> Self {
        Self::parse(s).unwrap_or_else(|_| Self(Vec::new()))
    }
}

impl TryFrom<String> for KeySpec {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        Self::parse(&s)
    }
}

impl From<KeySpec> for String {
    fn from(k: KeySpec) -> String {
        k.to_string()
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Every rebindable action. In config: `[tui.keys]` with one string per field; missing fields keep the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyBindings {
    /// Call the selected contact (also answers an incoming call).
    pub dial: KeySpec,
    /// Type any username to call (not only those in the list).
    pub dial_any: KeySpec,
    /// Answer the incoming call (only while the incoming-call prompt is up).
    pub accept: KeySpec,
    /// Decline the incoming call.
    pub reject: KeySpec,
    /// Hang up or cancel the current call (also declines an incoming call).
    pub hangup: KeySpec,
    pub mute: KeySpec,
    /// Start or stop recording the call.
    pub record: KeySpec,
    /// Audio device selection.
    pub devices: KeySpec,
    pub help: KeySpec,
    /// Quit (asks first while in a call).
    pub quit: KeySpec,
    /// Start typing a contacts filter.
    pub filter: KeySpec,
    pub up: KeySpec,
    pub down: KeySpec,
    /// Answer "yes" to a y/n question (SAS match, quit during a call).
    pub yes: KeySpec,
    pub no: KeySpec,
    /// Close an overlay, clear the filter, dismiss an ended call or a warning.
    pub cancel: KeySpec,
    /// Send a file to the selected contact (asks for its path).
    pub send_file: KeySpec,
    /// Move to the incoming-files pane and back (there `accept` or enter saves, `discard` deletes).
    pub files: KeySpec,
    /// Delete the selected incoming file without saving it.
    pub discard: KeySpec,
}

impl Default for KeyBindings {
    fn default() -> Self {
        let k = KeySpec::builtin;
        Self {
            dial: k("d enter"),
            dial_any: k(": c"),
            accept: k("a"),
            reject: k("r"),
            hangup: k("h"),
            mute: k("m"),
            record: k("R"),
            devices: k("s"),
            help: k("? f1"),
            quit: k("q ctrl-c"),
            filter: k("/"),
            up: k("up k"),
            down: k("down j"),
            yes: k("y"),
            no: k("n"),
            cancel: k("esc"),
            send_file: k("f"),
            files: k("F tab"),
            discard: k("x delete"),
        }
    }
}

impl KeyBindings {
    /// The main-screen actions, which must not share a key.
    fn main_screen(&self) -> [(&'static str, &KeySpec); 14] {
        [
            ("dial", &self.dial),
            ("dial_any", &self.dial_any),
            ("hangup", &self.hangup),
            ("mute", &self.mute),
            ("record", &self.record),
            ("devices", &self.devices),
            ("help", &self.help),
            ("quit", &self.quit),
            ("filter", &self.filter),
            ("up", &self.up),
            ("down", &self.down),
            ("cancel", &self.cancel),
            ("send_file", &self.send_file),
            ("files", &self.files),
        ]
    }

    /// Checks that actions available at the same moment have distinct keys; fails with
    /// [`KeyError::Conflict`] naming both actions.
    pub fn validate(&self) -> Result<(), KeyError> {
        let groups: [Vec<(&'static str, &KeySpec)>; 5] = [
            self.main_screen().to_vec(),
            // The incoming-call prompt: dial's keys also accept, hangup's also reject.
            vec![
                ("accept", &self.accept),
                ("reject", &self.reject),
                ("dial", &self.dial),
                ("hangup", &self.hangup),
                ("cancel", &self.cancel),
                ("quit", &self.quit),
            ],
            // y/n questions are asked while a call is shown, so they must not shadow call keys.
            vec![
                ("yes", &self.yes),
                ("no", &self.no),
                ("cancel", &self.cancel),
                ("hangup", &self.hangup),
                ("mute", &self.mute),
                ("record", &self.record),
                ("help", &self.help),
                ("quit", &self.quit),
            ],
            vec![("accept", &self.accept), ("reject", &self.reject), ("yes", &self.yes), ("no", &self.no)],
            // The incoming-files pane.
            vec![
                ("accept", &self.accept),
                ("discard", &self.discard),
                ("files", &self.files),
                ("up", &self.up),
                ("down", &self.down),
                ("cancel", &self.cancel),
                ("quit", &self.quit),
            ],
        ];
        for group in &groups {
            for (i, (a, ka)) in group.iter().enumerate() {
                for (b, kb) in &group[i + 1..] {
                    if let Some(c) = ka.chords().iter().find(|c| kb.chords().contains(c)) {
                        return Err(KeyError::Conflict { key: c.to_string(), first: a, second: b });
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `[tui]` table of the client config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TuiConfig {
    pub keys: KeyBindings,
    /// Redraw period when nothing happens, ms (the call clock and gauges advance at this pace).
    pub tick_ms: u64,
    /// Log lines kept for the log pane.
    pub log_lines: usize,
    /// Calls kept in the history pane.
    pub history_len: usize,
    /// Ring the terminal bell on an incoming call, and on an incoming file while nothing else goes on.
    pub bell: bool,
}

impl Default for TuiConfig {
    fn default() -> Self {
        Self { keys: KeyBindings::default(), tick_ms: 250, log_lines: 200, history_len: 50, bell: true }
    }
}

impl TuiConfig {
    /// Parses the body of a `[tui]` table and validates it; fails with a message naming the bad field or key.
    pub fn from_toml_str(s: &str) -> Result<Self, KeyError> {
        let cfg: Self = toml::from_str(s).map_err(|e| KeyError::Toml(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks key conflicts and value ranges; call after deserializing the embedding config.
    pub fn validate(&self) -> Result<(), KeyError> {
        if !(10..=5000).contains(&self.tick_ms) {
            return Err(KeyError::Toml(format!(
                "tick_ms = {} is out of range: use 10..=5000 (default 250)",
                self.tick_ms
            )));
        }
        self.keys.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let d = TuiConfig::default();
        d.validate().unwrap();
        assert!(d.keys.main_screen().iter().all(|(_, k)| !k.chords().is_empty()));
        let s = toml::to_string(&d).unwrap();
        assert!(s.contains("quit = \"q ctrl-c\""), "{s}");
        assert_eq!(TuiConfig::from_toml_str(&s).unwrap(), d);
    }

    #[test]
    fn parses_chords_and_matches_events() {
        let q = KeySpec::parse("q ctrl-c").unwrap();
        assert!(q.matches(&press(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(q.matches(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!q.matches(&press(KeyCode::Char('c'), KeyModifiers::NONE)));
        let r = KeySpec::parse("R").unwrap();
        assert!(r.matches(&press(KeyCode::Char('R'), KeyModifiers::SHIFT)));
        assert!(!r.matches(&press(KeyCode::Char('r'), KeyModifiers::NONE)));
        let help = KeySpec::parse("? f1").unwrap();
        assert!(help.matches(&press(KeyCode::Char('?'), KeyModifiers::SHIFT)));
        assert!(help.matches(&press(KeyCode::F(1), KeyModifiers::NONE)));
        assert_eq!(KeySpec::parse("Ctrl-X alt-enter space").unwrap().to_string(), "ctrl-x alt-enter space");
    }

    #[test]
    fn bad_config_gives_clear_errors() {
        let e = TuiConfig::from_toml_str("[keys]\ndial = \"ctrl-\"\n").unwrap_err().to_string();
        assert!(e.contains("unknown key \"ctrl-\"") && e.contains("dial"), "{e}");
        let e = TuiConfig::from_toml_str("[keys]\ndail = \"d\"\n").unwrap_err().to_string();
        assert!(e.contains("dail"), "{e}");
        let e = TuiConfig::from_toml_str("[keys]\nmute = \"h\"\n").unwrap_err().to_string();
        assert!(e.contains("`hangup` and `mute`"), "{e}");
        let e = TuiConfig::from_toml_str("[keys]\nquit = \"\"\n").unwrap_err().to_string();
        assert!(e.contains("empty key binding"), "{e}");
        let e = TuiConfig::from_toml_str("tick_ms = 0\n").unwrap_err().to_string();
        assert!(e.contains("tick_ms"), "{e}");
        let cfg =
            TuiConfig::from_toml_str("tick_ms = 500\n[keys]\nhangup = \"x esc\"\ncancel = \"backspace\"\n").unwrap();
        assert_eq!(cfg.tick_ms, 500);
        assert_eq!(cfg.keys.hangup.primary(), "x");
        assert_eq!(cfg.keys.dial, KeyBindings::default().dial);
    }
}
