//! The command line's shape: every subcommand and argument, with the help text `--help` shows (examples,
//! exit codes and file locations on the top-level page).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The top-level `--help` tail: what a new user needs beyond the list of commands.
const AFTER_HELP: &str = "\
Examples:
  qvoice demo                                           try it: a local registry and an echo contact
  qvoice init --username alice --registry http://registry.example:5001
  qvoice                                                the TUI (same as `qvoice tui`)
  qvoice --input speech.wav --output null               the TUI on a machine without a sound card
  qvoice call bob --duration 30 --input in.wav --output heard.wav --record-dir rec/
  qvoice listen --auto-answer --once --input silence --output null --json

Exit codes:
  0  success (for `listen`, also calls that were not answered)
  1  other error
  2  bad command line or config file (unknown flag, invalid username or URL, bad config value)
  3  registry unreachable
  4  the call did not happen (rejected, busy, missed, offline, cancelled, no such user, incompatible)
  5  no usable audio device (use --input/--output FILE.wav, or [audio] input/output in config.toml)
  6  a security check failed (identity key changed, handshake verification)
  7  the call dropped (peer vanished, media failure)

Files (owner-only: 0600 files, 0700 folders):
  config   $XDG_CONFIG_HOME/qvoice/config.toml   (default ~/.config/qvoice/config.toml)
  data     $XDG_DATA_HOME/qvoice/                (default ~/.local/share/qvoice): keys, contacts, history
  logs     $XDG_STATE_HOME/qvoice/qvoice.log     (default ~/.local/state/qvoice; rotated at 1 MiB, 3 kept)
  With --home DIR (or QVOICE_HOME): DIR/config.toml, DIR/data/, DIR/state/.
  Every setting is described in config.example.toml.";

const INIT_HELP: &str = "\
Nothing is written unless the registry accepts the registration: if it fails (registry down, name taken),
fix the problem and run the same command again.

Example:
  qvoice init --username alice --registry http://registry.example:5001 --display-name \"Alice\"";

const CALL_HELP: &str = "\
While the call runs, type `hangup`, `mute` or `unmute` and Enter; ctrl-c or SIGTERM hang up cleanly.

Examples:
  qvoice call bob
  qvoice call bob --duration 30 --input in.wav --output heard.wav --record-dir rec/ --json
  qvoice call bob --sim-loss 10 --sim-jitter 30ms";

const LISTEN_HELP: &str = "\
Type `accept` or `reject` and Enter when a call rings (or pass --auto-answer); `hangup`, `mute`, `unmute`
during a call; ctrl-c or SIGTERM to stop.

Examples:
  qvoice listen
  qvoice listen --auto-answer --once --input in.wav --output heard.wav --json";

const DEMO_HELP: &str = "\
The demo never touches your own identity or config: --home and QVOICE_HOME are ignored, and --dir is the
only place it writes. Without --dir it uses a temporary folder that is removed when the demo ends.";

#[derive(Parser, Debug)]
#[command(
    name = "qvoice",
    version,
    about = "Post-quantum end-to-end encrypted voice calls from a terminal",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Keep config, keys and logs under this folder instead of the XDG directories.
    #[arg(long, env = "QVOICE_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The TUI's options, without a command.
    #[command(flatten)]
    pub tui: TuiArgs,
    /// Without a command, opens the TUI.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options of the TUI (`qvoice` or `qvoice tui`); each overrides its config key for this run.
#[derive(Args, Debug, Clone, Default)]
pub struct TuiArgs {
    /// Microphone: `default`, a device name from `qvoice devices` (`pulse`, `jack`, `jack:PORT`, `alsa:NAME`),
    /// `silence`, a .wav file to send, or
    /// `loop:FILE.wav` to send it over and over [default: [audio] input in config.toml].
    #[arg(long, value_name = "DEVICE|FILE.wav")]
    pub input: Option<String>,
    /// Speaker: `default`, a device name (`pulse`, `jack`, `jack:PORT`, `alsa:NAME`), `null`, or a .wav file
    /// to write what you hear
    /// [default: [audio] output in config.toml].
    #[arg(long, value_name = "DEVICE|FILE.wav")]
    pub output: Option<String>,
    /// Record every call from its start into this folder: one subfolder per call with sent.wav and
    /// received.wav [default: [recording] dir; the record key toggles it].
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
}

impl TuiArgs {
    /// Whether any option was given.
    pub fn any(&self) -> bool {
        self.input.is_some() || self.output.is_some() || self.record_dir.is_some()
    }

    /// The same overrides in the shape the session options are built from.
    pub fn io(&self) -> IoArgs {
        IoArgs {
            input: self.input.clone(),
            output: self.output.clone(),
            record_dir: self.record_dir.clone(),
            ..IoArgs::default()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The terminal UI: contacts, one-key dialing, call control and live gauges (the default).
    Tui(TuiArgs),
    /// Try qvoice in one process: a local registry, an `echo` contact that plays back what it hears,
    /// and the TUI logged in as `you`.
    #[cfg(feature = "demo")]
    #[command(after_help = DEMO_HELP)]
    Demo {
        /// Keep the demo's registry database, keys, recordings and log in this folder (default: a temporary
        /// folder, removed at exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Create your identity key and prekey, register them, and write the config.
    #[command(after_help = INIT_HELP)]
    Init {
        /// Your username: 1-32 characters from a-z 0-9 _ . - starting with a letter or digit.
        #[arg(long, value_name = "NAME")]
        username: String,
        /// Registry base URL, e.g. http://127.0.0.1:5001 (its default port is 5001).
        #[arg(long, value_name = "URL")]
        registry: String,
        /// The name your contacts see beside your username.
        #[arg(long, value_name = "TEXT")]
        display_name: Option<String>,
        /// Replace an existing identity (contacts will see a key change).
        #[arg(long)]
        force: bool,
    },
    /// Show your username, registry, identity fingerprint and safety numbers.
    Whoami,
    /// List pinned contacts with their trust state and safety numbers.
    Contacts,
    /// Mark a contact verified after comparing the safety number (accepts a changed key).
    Verify {
        /// The contact's username.
        #[arg(value_name = "USER")]
        name: String,
    },
    /// Make a new signed prekey current and publish it.
    RotatePrekey,
    /// List audio devices and check that the default ones open.
    Devices,
    /// Call someone and stay in the call until hangup, --duration, or ctrl-c.
    #[command(after_help = CALL_HELP)]
    Call {
        /// Who to call (a username).
        #[arg(value_name = "USER")]
        name: String,
        /// Hang up this many seconds after the call becomes active.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Send a file, end-to-end encrypted, through the registry (the recipient may be offline).
    Send(super::files::SendArgs),
    /// List files waiting for you (sender, size, trust, name) and your sent files not yet received.
    Files(super::files::FilesArgs),
    /// Download, verify and save a waiting file (or --all); --discard deletes it unread.
    Receive(super::files::ReceiveArgs),
    /// Wait for calls (ctrl-c to stop).
    #[command(after_help = LISTEN_HELP)]
    Listen {
        /// Answer every call automatically.
        #[arg(long)]
        auto_answer: bool,
        /// Exit after the first call.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        io: IoArgs,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct IoArgs {
    /// Microphone: `default`, a device name from `qvoice devices` (`pulse`, `jack`, `jack:PORT`, `alsa:NAME`),
    /// `silence`, a .wav file to send, or
    /// `loop:FILE.wav` to send it over and over [default: [audio] input in config.toml].
    #[arg(long, value_name = "DEVICE|FILE.wav")]
    pub input: Option<String>,
    /// Speaker: `default`, a device name (`pulse`, `jack`, `jack:PORT`, `alsa:NAME`), `null`, or a .wav file
    /// to write what you hear
    /// [default: [audio] output in config.toml].
    #[arg(long, value_name = "DEVICE|FILE.wav")]
    pub output: Option<String>,
    /// Record the call into this folder: one subfolder per call with sent.wav and received.wav
    /// [default: [recording] dir, when [recording] enabled = true].
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Print one JSON object per event line.
    #[arg(long)]
    pub json: bool,
    /// Codec preference: opus or pcm [default: [audio] codec in config.toml].
    #[arg(long, value_name = "CODEC", value_parser = ["opus", "pcm"])]
    pub codec: Option<String>,
    /// End the call after this many seconds without media from the peer [default: [media] peer_timeout_s].
    #[arg(long, value_name = "SECONDS")]
    pub peer_timeout: Option<u64>,
    /// Simulated loss on outgoing media, percent.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    pub sim_loss: f64,
    /// Mean loss burst length in packets (1 = random loss).
    #[arg(long, default_value_t = 1.0, value_name = "PACKETS")]
    pub sim_burst: f64,
    /// Simulated extra delay, e.g. 40ms.
    #[arg(long, value_parser = parse_ms, value_name = "MS")]
    pub sim_delay: Option<Duration>,
    /// Simulated jitter, e.g. 30ms.
    #[arg(long, value_parser = parse_ms, value_name = "MS")]
    pub sim_jitter: Option<Duration>,
    /// Seed of the impairment simulation.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub sim_seed: u64,
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let n = s.strip_suffix("ms").unwrap_or(s);
    n.trim().parse::<u64>().map(Duration::from_millis).map_err(|_| format!("{s:?} is not a duration like 30ms"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every subcommand and every argument (positional or flag) has a description in `--help`.
    #[test]
    fn every_command_and_argument_is_described() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut missing = Vec::new();
        let mut stack = vec![(String::from("qvoice"), cmd)];
        while let Some((path, c)) = stack.pop() {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in c.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
        }
        assert!(missing.is_empty(), "without a description: {missing:?}");
    }

    #[test]
    fn top_level_help_has_examples_exit_codes_and_files() {
        let help = Cli::command().render_long_help().to_string();
        for needle in ["Examples:", "Exit codes:", "config.toml", "XDG_STATE_HOME", "qvoice init --username"] {
            assert!(help.contains(needle), "--help lacks {needle:?}");
        }
    }
}
