//! `qvoice` / `qvoice tui`: the session driver with the TUI in front of it.

use anyhow::{Context as _, bail};
use qvoice::config::{Config, Paths};
use qvoice::session::store::Keystore;
use qvoice::session::{SessionCommand, SessionEvent, SessionOptions};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::args::TuiArgs;
use super::options::session_options;

/// Runs the TUI against a session driver; returns when the user quits.
pub async fn run_tui(
    mut opts: SessionOptions,
    cfg: &Config,
    log: Option<mpsc::Receiver<String>>,
    log_file: &std::path::Path,
) -> anyhow::Result<()> {
    let _stderr = qvoice::logging::StderrToFile::new(log_file).context("sending stderr to the log file")?;
    let username = opts.keystore.username.to_string();
    // The TUI opens without the registry (offline header, cached contacts and history) and connects later.
    opts.start_offline = true;
    // The Files pane lists what waits at start and names each new file.
    opts.list_files = true;
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (ev_tx, mut driver_rx) = mpsc::channel(512);
    let driver = tokio::spawn(qvoice::session::run(opts, cmd_rx, ev_tx));
    // Call events go to the log file too, so it tells what happened after the screen is gone.
    let (ui_tx, ev_rx) = mpsc::channel(512);
    tokio::spawn(async move {
        while let Some(ev) = driver_rx.recv().await {
            log_call_event(&ev);
            if ui_tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    // SIGTERM, or SIGHUP when the terminal (an ssh session) goes away, ends the TUI like `q` does: the
    // terminal is restored (the TUI's guard drops), the call is hung up, and the demo removes its files.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let ui = tokio::select! {
        r = qvoice::tui::run(cfg.tui.clone(), username, ev_rx, cmd_tx.clone(), log) => r,
        _ = term.recv() => {
            tracing::info!("SIGTERM: quitting");
            Ok(())
        }
        _ = hup.recv() => {
            tracing::info!("the terminal went away (SIGHUP): quitting");
            Ok(())
        }
    };
    let _ = cmd_tx.send(SessionCommand::Shutdown).await;
    let session = match tokio::time::timeout(SHUTDOWN_WAIT, driver).await {
        Ok(joined) => joined.context("session task panicked")?,
        Err(_) => Err(anyhow::anyhow!("the session did not stop within {SHUTDOWN_WAIT:?}")),
    };
    ui?;
    session
}

/// How long quitting waits for the session to hang up and sign off.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Logs the events that make up a call's story at info.
fn log_call_event(ev: &SessionEvent) {
    match ev {
        SessionEvent::Dialing { to, .. } => tracing::info!("calling {to}"),
        SessionEvent::Ringing { to, .. } => tracing::info!("{to} is ringing"),
        SessionEvent::IncomingCall { from, trust, .. } => tracing::info!("incoming call from {from} ({trust:?})"),
        SessionEvent::CallWaiting { from, .. } => tracing::info!("{from} is calling (call waiting)"),
        SessionEvent::Active { peer, codec, .. } => tracing::info!("in call with {peer} ({codec})"),
        SessionEvent::Ended { peer, reason, duration_s, .. } => {
            tracing::info!("call with {peer} ended after {duration_s:.1} s: {}", reason.label())
        }
        SessionEvent::KeyWarning { username, .. } => {
            tracing::warn!("{username}'s identity key changed; calls are blocked until `qvoice verify {username}`")
        }
        _ => {}
    }
}

/// `qvoice` / `qvoice tui`: exit 0 when the user quits.
///
/// Fails without an identity, on an invalid config (exit 2), or when the terminal cannot be set up.
pub async fn tui(paths: &Paths, home: Option<&std::path::Path>, args: &TuiArgs) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    if !Keystore::path_in(&paths.data_dir).exists() {
        bail!(
            "no identity yet: run `qvoice init --username NAME --registry URL` first, or `qvoice demo` to try \
             qvoice with a local registry and an echo contact"
        );
    }
    let mut opts = session_options(paths, &cfg, &args.io())?;
    // The device picker's choice is remembered in this run's config file.
    opts.config_file = Some(paths.config_file.clone());
    opts.download_dir =
        Some(cfg.files.download_dir.clone().unwrap_or_else(|| qvoice::session::files::default_download_dir(home)));
    let log = qvoice::logging::to_file_and_pane(&paths.log_file)?;
    // Said at start, in the log pane, rather than after a peer has answered.
    let (input, output) = (opts.input.clone(), opts.output.clone());
    if let Ok(Err(problem)) = tokio::task::spawn_blocking(move || super::audio::check_devices(&input, &output)).await {
        tracing::warn!("{}", problem.line());
    }
    run_tui(opts, &cfg, Some(log), &paths.log_file).await?;
    Ok(0)
}
