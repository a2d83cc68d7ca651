//! Configuration: where qvoice keeps its files, and the settings in `config.toml`
//! (every setting is documented in `config.example.toml` at the repository root).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::tui::TuiConfig;

/// Where qvoice's files live: the config file and the data directory (keys, contacts).
#[derive(Clone, Debug)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Paths {
    /// `home` (from `--home` or `QVOICE_HOME`) puts everything under one folder, which is what tests and
    /// several local identities use; otherwise XDG directories (`~/.config/qvoice`, `~/.local/share/qvoice`).
    ///
    /// Fails when no home directory can be determined.
    pub fn resolve(home: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(home) = home {
            return Ok(Self {
                config_file: home.join("config.toml"),
                data_dir: home.join("data"),
                log_file: home.join("qvoice.log"),
            });
        }
        let dirs = directories::ProjectDirs::from("", "", "qvoice")
            .context("cannot find a home directory; pass --home DIR or set QVOICE_HOME")?;
        Ok(Self {
            config_file: dirs.config_dir().join("config.toml"),
            data_dir: dirs.data_dir().to_path_buf(),
            log_file: dirs.data_dir().join("qvoice.log"),
        })
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub registry: RegistryConfig,
    pub audio: AudioConfig,
    pub media: MediaSettings,
    pub recording: RecordingConfig,
    pub tui: TuiConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the qvoice-registry, e.g. `http://registry.example:5001`.
    pub url: String,
    /// Our username there.
    pub username: Option<String>,
    /// Optional human name shown to contacts.
    pub display_name: Option<String>,
    /// Fall back to polling `/call/pending` when the push stream is unavailable.
    pub poll_fallback: bool,
    /// Rotate the signed prekey when it is older than this many days (0: never automatically).
    pub prekey_rotation_days: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:5001".into(),
            username: None,
            display_name: None,
            poll_fallback: true,
            prekey_rotation_days: 7,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// Microphone: `default`, a device name from `qvoice devices`, or a path to a `.wav` file.
    pub input: String,
    /// Speaker: `default`, a device name, or a path to a `.wav` file to write.
    pub output: String,
    /// Preferred codec: `opus` or `pcm` (the seed's raw 16-bit PCM).
    pub codec: String,
    /// Frame duration in ms: 10, 20, 40 or 60.
    pub frame_ms: u8,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self { input: "default".into(), output: "default".into(), codec: "opus".into(), frame_ms: 20 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Local UDP port for media (0: any free port).
    pub port: u16,
    /// Ask for the seed's per-frame obfuscation layer (adds no confidentiality; see docs/SECURITY.md).
    pub obfuscation: bool,
    /// End the call when no media arrives from the peer for this many seconds.
    pub peer_timeout_s: u64,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self { port: 0, obfuscation: false, peer_timeout_s: 10 }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Folder for call recordings (one subfolder per call with `sent.wav` and `received.wav`).
    pub dir: Option<PathBuf>,
    /// Record every call from the start (otherwise toggle in the TUI or pass `--record-dir`).
    pub enabled: bool,
}

impl Config {
    /// Reads `path`; a missing file gives the defaults. Fails on unreadable or invalid TOML, saying where.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config atomically. Fails on I/O errors.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("serializing config")?;
        crate::session::store::write_atomic(path, text.as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults_where_it_says_so() {
        let text = include_str!("../config.example.toml");
        let cfg: Config = toml::from_str(text).expect("config.example.toml must parse");
        assert_eq!(cfg.audio, AudioConfig::default());
        assert_eq!(cfg.media, MediaSettings::default());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("[audio]\ncodek = \"opus\"\n").is_err());
    }
}
