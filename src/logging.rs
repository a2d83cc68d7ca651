//! Where tracing output goes. Headless commands log to stderr; the TUI owns the terminal, so its logs go
//! to a file and, line by line, into the TUI's log pane. Nothing may print over the TUI.

use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

/// The STUN/TURN crates log normal protocol steps (the first 401 challenge of every allocation, a
/// permission already being created) at ERROR; the transport reports what matters in our own words.
const QUIET_CRATES: &str = ",stun_proto=off,turn_client_proto=off,turn_types=off,stun_types=off";

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("QVOICE_LOG").unwrap_or_else(|_| EnvFilter::new(format!("{default}{QUIET_CRATES}")))
}

/// Logs to stderr (headless commands). `QVOICE_LOG` overrides the level (e.g. `debug`).
pub fn to_stderr() {
    let _ = tracing_subscriber::fmt().with_env_filter(filter("warn")).with_writer(std::io::stderr).try_init();
}

/// Logs to `file` (appending) and sends each line to the returned receiver for the TUI's log pane.
///
/// Fails when the log file cannot be opened.
pub fn to_file_and_pane(file: &Path) -> anyhow::Result<mpsc::Receiver<String>> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    let (tx, rx) = mpsc::channel(512);
    let shared = Arc::new(Mutex::new(f));
    let make = move || PaneWriter { file: shared.clone(), tx: tx.clone(), line: Vec::new() };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info,hyper=warn,reqwest=warn,rustls=warn"))
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .with_writer(make)
        .try_init();
    Ok(rx)
}

/// One log event's writer: buffers the formatted line, then appends it to the file and offers it to the
/// pane (dropped if the pane is behind; the file keeps everything).
struct PaneWriter {
    file: Arc<Mutex<std::fs::File>>,
    tx: mpsc::Sender<String>,
    line: Vec<u8>,
}

impl std::io::Write for PaneWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PaneWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(&self.line);
        }
        let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        let _ = self.tx.try_send(text);
    }
}

/// While alive, the process's stderr (fd 2) goes to a log file: audio libraries (ALSA through cpal) print
/// from threads we do not own, and nothing may print over the TUI. Dropping it restores stderr; a panic
/// restores it first, so the panic message reaches the terminal after the TUI has restored it.
#[derive(Debug)]
pub struct StderrToFile {
    saved: std::sync::Arc<OwnedFd>,
}

impl StderrToFile {
    /// Fails when the file cannot be opened or the descriptors cannot be duplicated.
    pub fn new(file: &Path) -> anyhow::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
        let saved = std::sync::Arc::new(std::io::stderr().as_fd().try_clone_to_owned()?);
        nix::unistd::dup2(f.as_raw_fd(), 2)?;
        // The hook owns a reference, so the saved descriptor stays open (and is never a reused number).
        let for_hook = saved.clone();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = nix::unistd::dup2(for_hook.as_raw_fd(), 2);
            prev(info);
        }));
        Ok(Self { saved })
    }
}

impl Drop for StderrToFile {
    fn drop(&mut self) {
        let _ = nix::unistd::dup2(self.saved.as_raw_fd(), 2);
    }
}
