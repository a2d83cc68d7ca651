//! The `qvoice` command line: argument definitions ([`args`]) and one module per subcommand group. `main.rs`
//! only builds the runtime and maps the result to an exit code; [`run`] dispatches.
//!
//! Exit codes: 0 success (the call happened and ended normally); 1 other error; 2 bad command line or config;
//! 3 registry unreachable; 4 the call did not happen (rejected, busy, missed, offline, cancelled, unknown
//! user); 5 no usable audio device; 6 security check failed (identity key changed, handshake verification);
//! 7 the call dropped (peer vanished, media failure).

pub mod args;
pub mod audio;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devices;
pub mod files;
pub mod headless;
pub mod init;
pub mod options;
pub mod tui;
pub mod whoami;

use qvoice::config::{ConfigError, Paths};
use qvoice::session::client::ClientError;

pub use args::{Cli, Command};

/// A mistake in what the user typed (a value clap cannot check, such as a username or a URL): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for a command that failed with `e`: 2 for a usage or config-file mistake, 3 when the
/// registry was unreachable, 1 otherwise.
pub fn error_exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<UsageError>() || c.is::<ConfigError>()) {
        2
    } else if e.chain().any(|c| matches!(c.downcast_ref::<ClientError>(), Some(ClientError::Unreachable { .. }))) {
        3
    } else {
        1
    }
}

/// Milliseconds since the Unix epoch (key creation times).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Hex in groups of 8 digits, for fingerprints.
pub(crate) fn grouped_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes().chunks(8).filter_map(|c| std::str::from_utf8(c).ok()).collect::<Vec<_>>().join(" ")
}

/// Whether the command draws the TUI (and so must not log to stderr).
pub fn uses_terminal(command: Option<&Command>) -> bool {
    match command {
        None | Some(Command::Tui(_)) => true,
        #[cfg(feature = "demo")]
        Some(Command::Demo { .. }) => true,
        Some(_) => false,
    }
}

/// Runs one command; returns the exit code.
///
/// Fails with the error to print (exit 3 when the registry was unreachable, else 1).
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let paths = Paths::resolve(cli.home.as_deref())?;
    let home = cli.home.clone();
    let Some(command) = cli.command else { return tui::tui(&paths, home.as_deref(), &cli.tui).await };
    // clap's args_conflicts_with_subcommands would also refuse the global --home before a command.
    if cli.tui.any() && !matches!(command, Command::Tui(_)) {
        return Err(UsageError(
            "--input, --output and --record-dir before a command are the TUI's; put them after the command \
             (e.g. `qvoice call bob --input speech.wav`)"
                .into(),
        )
        .into());
    }
    match command {
        Command::Tui(args) => tui::tui(&paths, home.as_deref(), &args).await,
        #[cfg(feature = "demo")]
        Command::Demo { dir } => demo::demo(dir).await,
        Command::Init { username, registry, display_name, force } => {
            init::init(&paths, &username, &registry, display_name, force).await
        }
        Command::Whoami => whoami::whoami(&paths),
        Command::Contacts => whoami::contacts(&paths),
        Command::Verify { name } => whoami::verify(&paths, &name),
        Command::RotatePrekey => init::rotate(&paths).await,
        Command::Devices => devices::devices(&paths.config_file),
        Command::Call { name, duration, io } => {
            headless::headless(&paths, io, headless::Mode::Call { name, duration }).await
        }
        Command::Listen { auto_answer, once, io } => {
            headless::headless(&paths, io, headless::Mode::Listen { auto_answer, once }).await
        }
        Command::Send(args) => files::send(&paths, args).await,
        Command::Files(args) => files::files(&paths, args).await,
        Command::Receive(args) => files::receive(&paths, home.as_deref(), args).await,
    }
}
