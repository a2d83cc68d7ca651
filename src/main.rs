//! The `qvoice` command: identity setup, contacts, and calls, headless (`call`, `listen`) or in the TUI.
//! The commands live in `cli/`; this file builds the runtime and turns the outcome into an exit code
//! (the codes are listed in `cli/mod.rs` and in `qvoice --help`).

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

fn main() -> ExitCode {
    // Every file qvoice writes (config, keys, logs, history, recordings) is its owner's only: 0600 files,
    // 0700 folders. Set before any thread starts, as the umask is per process.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = cli::Cli::parse();
    if !cli::uses_terminal(cli.command.as_ref()) {
        qvoice::logging::to_stderr();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qvoice: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(cli::run(cli));
    // The stdin reader sits in a blocking read that cannot be cancelled; do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("qvoice: {e:#}");
            ExitCode::from(cli::error_exit_code(&e))
        }
    }
}
