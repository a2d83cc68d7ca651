//! Configuration: where qvoice keeps its files, and the settings in `config.toml`
//! (every setting is documented in `config.example.toml` at the repository root). The file is validated
//! when it is loaded, so a bad value is reported by its key and allowed values before anything starts.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::tui::TuiConfig;

/// Where qvoice's files live: the config file, the data directory (keys, contacts, history) and the state
/// directory (logs).
#[derive(Clone, Debug)]
pub struct Paths {
    pub config_file: PathBuf,
    pub data_dir: PathBuf,
    /// Logs (`$XDG_STATE_HOME/qvoice`, default `~/.local/state/qvoice`; `<home>/state` with `--home`).
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
}

impl Paths {
    /// `home` (from `--home` or `QVOICE_HOME`) puts everything under one folder, which is what tests and
    /// several local identities use; otherwise XDG directories (`~/.config/qvoice`, `~/.local/share/qvoice`,
    /// `~/.local/state/qvoice`).
    ///
    /// Fails when no home directory can be determined.
    pub fn resolve(home: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(home) = home {
            let state_dir = home.join("state");
            return Ok(Self {
                config_file: home.join("config.toml"),
                data_dir: home.join("data"),
                log_file: state_dir.join("qvoice.log"),
                state_dir,
            });
        }
        let dirs = directories::ProjectDirs::from("", "", "qvoice")
            .context("cannot find a home directory; pass --home DIR or set QVOICE_HOME")?;
        // `state_dir` is Linux-only in `directories`; elsewhere logs stay beside the data.
        let state_dir = dirs.state_dir().unwrap_or(dirs.data_dir()).to_path_buf();
        Ok(Self {
            config_file: dirs.config_dir().join("config.toml"),
            data_dir: dirs.data_dir().to_path_buf(),
            log_file: state_dir.join("qvoice.log"),
            state_dir,
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
    pub files: FilesConfig,
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
    /// Microphone: `default`, a device name from `qvoice devices`, `silence`, a path to a `.wav` file, or
    /// `loop:FILE.wav` (the file over and over).
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Folder for received files (created when needed) [default: the XDG download folder, ~/Downloads;
    /// HOME_DIR/downloads with --home].
    pub download_dir: Option<PathBuf>,
}

/// A config file that does not parse or holds a value qvoice cannot use. The message names the key and the
/// values it accepts.
#[derive(Debug, thiserror::Error)]
#[error("invalid config file {}: {problem}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, naming the key.
    pub problem: String,
}

/// The registry's default port, suggested when a URL has none.
const REGISTRY_PORT: u16 = 5001;

/// Checks a registry base URL and returns it without trailing slashes. Fails with a message that says
/// what to write instead (a URL without a scheme gets "did you mean http://HOST:PORT?").
pub fn check_registry_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(format!("the registry URL is empty; use http://HOST:{REGISTRY_PORT} or https://HOST"));
    }
    if !url.contains("://") {
        let has_port = url.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let guess = if has_port { format!("http://{url}") } else { format!("http://{url}:{REGISTRY_PORT}") };
        return Err(format!("the registry URL {url:?} has no scheme; did you mean {guess}?"));
    }
    qvoice_proto::auth::origin_of_url(url).map_err(|_| {
        format!("{url:?} is not a registry URL; use http://HOST:PORT or https://HOST (e.g. http://127.0.0.1:{REGISTRY_PORT})")
    })?;
    Ok(url.to_owned())
}

/// The file a microphone spelling (`x.wav`, `loop:x.wav`) reads, if it names one.
pub fn wav_input_file(spec: &str) -> Option<&Path> {
    let path = spec.strip_prefix("loop:").unwrap_or(spec);
    path.ends_with(".wav").then(|| Path::new(path))
}

/// The frame durations the media engine runs `codec` at (every protocol duration it can carry).
pub fn frame_durations(codec: qvoice_proto::Codec) -> Vec<u8> {
    let kind = match codec {
        qvoice_proto::Codec::Opus => crate::media::CodecKind::Opus,
        qvoice_proto::Codec::Pcm16 => crate::media::CodecKind::Pcm,
    };
    [10, 20, 40, 60].into_iter().filter(|&ms| kind.frame_samples(ms).is_ok()).collect()
}

/// `10, 20 or 40`.
pub fn list(values: &[u8]) -> String {
    let v: Vec<String> = values.iter().map(u8::to_string).collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => v.join(""),
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults. Fails with a [`ConfigError`] on invalid TOML or a
    /// value qvoice cannot use, and on an unreadable file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let cfg = Self::parse(path)?;
        cfg.validate().map_err(|problem| ConfigError { file: path.to_owned(), problem })?;
        Ok(cfg)
    }

    /// Reads `path` without checking the values (`qvoice init` replaces [registry] and then validates the
    /// result). Fails with a [`ConfigError`] on invalid TOML, and on an unreadable file.
    pub fn parse(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(toml::from_str::<Self>(&text)
                .map_err(|e| ConfigError { file: path.to_owned(), problem: e.to_string().trim().to_owned() })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Checks every value a call or the TUI would otherwise reject later. Fails with a message naming the
    /// key and the allowed values.
    pub fn validate(&self) -> Result<(), String> {
        check_registry_url(&self.registry.url).map_err(|e| format!("[registry] url: {e}"))?;
        if let Some(name) = &self.registry.username {
            qvoice_proto::Username::parse(name).map_err(|_| {
                format!(
                    "[registry] username = {name:?} is not a valid username: use 1-32 characters from a-z 0-9 _ . - \
                     starting with a letter or digit"
                )
            })?;
        }
        let codec = qvoice_proto::Codec::from_name(&self.audio.codec).ok_or_else(|| {
            format!("[audio] codec = {:?} is not a known codec; use \"opus\" or \"pcm\"", self.audio.codec)
        })?;
        let durations = frame_durations(codec);
        if !durations.contains(&self.audio.frame_ms) {
            return Err(format!(
                "[audio] frame_ms = {} is not supported with codec {:?}; use {}",
                self.audio.frame_ms,
                self.audio.codec,
                list(&durations)
            ));
        }
        if let Some(file) = wav_input_file(&self.audio.input)
            && !file.is_file()
        {
            return Err(format!(
                "[audio] input = {:?}: there is no such file (a microphone file must exist; use \"silence\" to send \
                 nothing)",
                self.audio.input
            ));
        }
        for (key, value) in [("input", &self.audio.input), ("output", &self.audio.output)] {
            if value.trim().is_empty() {
                return Err(format!(
                    "[audio] {key} is empty; use \"default\", a device name from `qvoice devices`, or a .wav file"
                ));
            }
        }
        if self.media.peer_timeout_s == 0 {
            return Err("[media] peer_timeout_s = 0: use at least 1 (seconds; default 10)".into());
        }
        if self.recording.enabled && self.recording.dir.is_none() {
            return Err(
                "[recording] enabled = true needs a folder: set [recording] dir = \"/path/to/recordings\"".into()
            );
        }
        if let Some(d) = &self.files.download_dir {
            if d.as_os_str().is_empty() {
                return Err("[files] download_dir is empty: give a folder, or remove the line for ~/Downloads".into());
            }
            if d.exists() && !d.is_dir() {
                return Err(format!("[files] download_dir = {:?} is a file, not a folder", d.display().to_string()));
            }
        }
        self.tui.validate().map_err(|e| format!("[tui] {e}"))?;
        Ok(())
    }

    /// Writes the config atomically, readable by its owner only. Fails on I/O errors.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("serializing config")?;
        crate::session::store::write_atomic(path, text.as_bytes(), 0o600)
    }
}

/// Sets `[audio] <key>` (`input` or `output`) to `value` in the config file at `path`, keeping everything
/// else in it (other settings, comments, order); a missing file is created. Written atomically, readable by
/// its owner only, like [`Config::save`].
///
/// Fails when the file cannot be read or written, does not parse, or would not load afterwards.
pub fn save_audio_choice(path: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| ConfigError {
        file: path.to_owned(),
        problem: e.to_string().trim().into(),
    })?;
    let audio = doc.entry("audio").or_insert_with(toml_edit::table);
    let Some(table) = audio.as_table_like_mut() else {
        return Err(ConfigError { file: path.to_owned(), problem: "[audio] is not a table".into() }.into());
    };
    table.insert(key, toml_edit::value(value));
    let text = doc.to_string();
    toml::from_str::<Config>(&text)
        .map_err(|e| ConfigError { file: path.to_owned(), problem: e.to_string().trim().to_owned() })?;
    crate::session::store::write_atomic(path, text.as_bytes(), 0o600)
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

    /// Writes `text` as a config file and loads it; returns the error message.
    fn load_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let err = Config::load(&path).unwrap_err();
        assert!(err.downcast_ref::<ConfigError>().is_some(), "not a ConfigError: {err:#}");
        err.to_string()
    }

    #[test]
    fn bad_values_are_refused_at_load_naming_key_and_allowed_values() {
        let e = load_error("[audio]\nframe_ms = 25\n");
        assert!(e.contains("[audio] frame_ms = 25") && e.contains("10, 20, 40 or 60"), "{e}");
        let e = load_error("[audio]\ncodec = \"pcm\"\nframe_ms = 60\n");
        assert!(e.contains("frame_ms = 60") && e.contains("10, 20 or 40"), "{e}");
        let e = load_error("[audio]\ncodec = \"mp3\"\n");
        assert!(e.contains("[audio] codec = \"mp3\"") && e.contains("\"opus\" or \"pcm\""), "{e}");
        let e = load_error("[registry]\nurl = \"127.0.0.1:5001\"\n");
        assert!(e.contains("[registry] url") && e.contains("did you mean http://127.0.0.1:5001?"), "{e}");
        let e = load_error("[registry]\nusername = \"Alice!\"\n");
        assert!(e.contains("[registry] username"), "{e}");
        let e = load_error("[media]\npeer_timeout_s = 0\n");
        assert!(e.contains("[media] peer_timeout_s"), "{e}");
        let e = load_error("[recording]\nenabled = true\n");
        assert!(e.contains("[recording] dir"), "{e}");
        let e = load_error("[audio]\ninput = \"/no/such/speech.wav\"\n");
        assert!(e.contains("[audio] input") && e.contains("no such file"), "{e}");
        let e = load_error("[audio]\ninput = \"loop:/no/such/speech.wav\"\n");
        assert!(e.contains("[audio] input"), "{e}");
        let e = load_error("[files]\ndownload_dir = \"\"\n");
        assert!(e.contains("[files] download_dir is empty"), "{e}");
        let e = load_error("[files]\ndownload_dir = \"/etc/hostname\"\n");
        assert!(e.contains("[files] download_dir") && e.contains("not a folder"), "{e}");
        let e = load_error("[audio]\nframe_ms = \"twenty\"\n");
        assert!(e.contains("frame_ms"), "{e}");
    }

    #[test]
    fn good_values_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[audio]\ncodec = \"pcm\"\nframe_ms = 40\n[registry]\nurl = \"https://r.example/\"\n")
            .unwrap();
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.audio.frame_ms, 40);
        assert!(Config::load(&dir.path().join("missing.toml")).is_ok());
    }

    #[test]
    fn registry_urls_are_checked_with_a_suggestion() {
        assert_eq!(check_registry_url("http://127.0.0.1:5001/").unwrap(), "http://127.0.0.1:5001");
        assert_eq!(check_registry_url("https://registry.example").unwrap(), "https://registry.example");
        let e = check_registry_url("registry.example").unwrap_err();
        assert!(e.contains("did you mean http://registry.example:5001?"), "{e}");
        let e = check_registry_url("localhost:5001").unwrap_err();
        assert!(e.contains("did you mean http://localhost:5001?"), "{e}");
        assert!(check_registry_url("ftp://x:1").unwrap_err().contains("http://HOST:PORT"));
        assert!(check_registry_url("http://:5001").is_err());
        assert!(check_registry_url("").is_err());
    }

    #[test]
    fn home_keeps_config_data_and_logs_in_one_folder() {
        let p = Paths::resolve(Some(Path::new("/h"))).unwrap();
        assert_eq!(p.config_file, Path::new("/h/config.toml"));
        assert_eq!(p.data_dir, Path::new("/h/data"));
        assert_eq!(p.state_dir, Path::new("/h/state"));
        assert_eq!(p.log_file, Path::new("/h/state/qvoice.log"));
    }

    #[test]
    fn an_audio_choice_is_saved_keeping_the_rest_of_the_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = "# my registry\n[registry]\nurl = \"http://r.example:5001\" # home\n\n[audio]\ncodec = \"pcm\"\n";
        std::fs::write(&path, text).unwrap();
        save_audio_choice(&path, "input", "hw:CARD=USB,DEV=0").unwrap();
        save_audio_choice(&path, "output", "/tmp/speaker.wav").unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(saved.contains("# my registry") && saved.contains("# home"), "comments kept:\n{saved}");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.registry.url, "http://r.example:5001");
        assert_eq!(cfg.audio.codec, "pcm");
        assert_eq!(cfg.audio.input, "hw:CARD=USB,DEV=0");
        assert_eq!(cfg.audio.output, "/tmp/speaker.wav");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A missing file is created with just the choice.
        let fresh = dir.path().join("new.toml");
        save_audio_choice(&fresh, "output", "null").unwrap();
        assert_eq!(Config::load(&fresh).unwrap().audio.output, "null");
        // A file that does not parse is not overwritten.
        std::fs::write(&path, "[audio\n").unwrap();
        let e = save_audio_choice(&path, "input", "default").unwrap_err();
        assert!(e.downcast_ref::<ConfigError>().is_some(), "{e:#}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[audio\n");
    }

    #[test]
    fn saved_config_is_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        Config::default().save(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
