//! The terminal UI: a ratatui dashboard over the session's event stream. [`App`] holds the state and changes
//! only in [`App::update`] (no I/O); `impl Widget for &App` draws it; [`run`] is the one place that touches the
//! terminal: it owns raw mode and the alternate screen (restored on exit, error and panic), reads keys on a
//! thread of its own, and redraws after each burst of events and on a slow tick, never spinning.

mod app;
mod bigtext;
pub mod files;
mod keys;
mod mode;
mod overlays;
mod ui;

#[cfg(test)]
mod snapshot_tests;

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{self as ct, Event as CtEvent};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

pub use app::{Action, App, Call, CallPhase, Effect, Event, HistoryEntry, Incoming, LogLine, Overlay, SasCheck};
pub use keys::{KeyBindings, KeyChord, KeyError, KeySpec, TuiConfig};
pub use mode::{Binding, Mode};

use crate::session::{SessionCommand, SessionEvent};

/// How often the key-reader thread checks whether the UI has gone away.
const READER_POLL: Duration = Duration::from_millis(200);
/// How long quitting waits for the terminal reader thread (a few of its poll periods).
const READER_STOP_WAIT: Duration = Duration::from_millis(600);
/// Events handled before a redraw is forced, so a flood of log lines cannot starve the screen.
const MAX_BATCH: usize = 64;

/// Runs the TUI until the user quits or the session's event stream ends.
///
/// Sends [`SessionCommand::Shutdown`] when the user quits (the session hangs up any call). Fails if the
/// terminal cannot be put into raw mode / the alternate screen or cannot be drawn to, or if the session stops
/// taking commands; the terminal is restored in every case, panics included.
pub async fn run(
    config: TuiConfig,
    username: String,
    mut events: mpsc::Receiver<SessionEvent>,
    commands: mpsc::Sender<SessionCommand>,
    log_lines: Option<mpsc::Receiver<String>>,
) -> anyhow::Result<()> {
    config.validate().context("checking the [tui] config")?;
    let tick = Duration::from_millis(config.tick_ms);
    let _guard = TerminalGuard::enter().context("setting up the terminal (raw mode, alternate screen)")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout())).context("opening the terminal")?;
    terminal.clear().context("clearing the terminal")?;

    let (key_tx, mut keys) = mpsc::channel::<CtEvent>(64);
    let reader = KeyReader::spawn(key_tx).context("starting the key reader thread")?;

    let app = App::new(config, username, Instant::now());
    let result = event_loop(&mut terminal, app, &mut keys, &mut events, &commands, log_lines, tick).await;
    // Drop our end first so a reader blocked on a full channel wakes up, then wait for it.
    drop(keys);
    reader.stop();
    result
}

async fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<io::Stdout>>,
    mut app: App,
    keys: &mut mpsc::Receiver<CtEvent>,
    events: &mut mpsc::Receiver<SessionEvent>,
    commands: &mpsc::Sender<SessionCommand>,
    mut log_lines: Option<mpsc::Receiver<String>>,
    tick: Duration,
) -> anyhow::Result<()> {
    if let Ok(size) = terminal.size() {
        app.handle(Instant::now(), Event::Resize(size.width, size.height));
    }
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        terminal.draw(|f| f.render_widget(&app, f.area())).context("drawing the screen")?;
        // Wait for the next thing to happen, then take everything else already queued before redrawing.
        let first = tokio::select! {
            k = keys.recv() => match k {
                Some(k) => translate(k),
                None => anyhow::bail!("the key reader stopped (terminal closed?)"),
            },
            e = events.recv() => match e {
                Some(e) => Some(Event::Session(e)),
                // The session is gone: nothing left to show or control.
                None => return Ok(()),
            },
            l = recv_opt(&mut log_lines) => match l {
                Some(l) => Some(Event::Log(l)),
                None => { log_lines = None; None }
            },
            _ = ticker.tick() => Some(Event::Tick),
        };
        let mut batch: Vec<Event> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            if let Ok(k) = keys.try_recv() {
                batch.extend(translate(k));
            } else if let Ok(e) = events.try_recv() {
                batch.push(Event::Session(e));
            } else if let Some(l) = log_lines.as_mut().and_then(|r| r.try_recv().ok()) {
                batch.push(Event::Log(l));
            } else {
                break;
            }
        }
        if apply(&mut app, batch, commands).await? {
            return Ok(());
        }
    }
}

/// Applies events; carries out effects. Returns true when the user quit.
async fn apply(app: &mut App, batch: Vec<Event>, commands: &mpsc::Sender<SessionCommand>) -> anyhow::Result<bool> {
    for event in batch {
        app.wall_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        match app.handle(Instant::now(), event) {
            None => {}
            Some(Effect::Bell) => {
                let mut out = io::stdout();
                // A bell that fails to ring is not worth stopping the UI for.
                let _ = out.write_all(b"\x07").and_then(|()| out.flush());
            }
            Some(Effect::Command(cmd)) => {
                commands.send(cmd).await.context("sending a command to the session (it has stopped)")?;
            }
            Some(Effect::Quit) => {
                // The session may already be gone; quitting must still work.
                let _ = commands.try_send(SessionCommand::Shutdown);
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn translate(e: CtEvent) -> Option<Event> {
    match e {
        CtEvent::Key(k) => Some(Event::Key(k)),
        CtEvent::Resize(w, h) => Some(Event::Resize(w, h)),
        _ => None,
    }
}

/// Puts the terminal into raw mode and the alternate screen, and takes both back on drop and on panic.
struct TerminalGuard {
    previous_hook: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static>,
}

impl std::fmt::Debug for TerminalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TerminalGuard")
    }
}

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        let previous_hook: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
            Arc::from(std::panic::take_hook());
        let chained = Arc::clone(&previous_hook);
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            chained(info);
        }));
        let guard = Self { previous_hook };
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
        if !thread::panicking() {
            let previous = Arc::clone(&self.previous_hook);
            std::panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

fn restore_terminal() {
    // Best effort: each step is independent, and there is nowhere left to report a failure.
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// Reads terminal events on a plain thread (crossterm's reader blocks) and forwards them; waits in `poll`,
/// so it costs nothing while idle, and checks a stop flag a few times a second.
#[derive(Debug)]
struct KeyReader {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl KeyReader {
    fn spawn(tx: mpsc::Sender<CtEvent>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new().name("tui-keys".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match ct::poll(READER_POLL) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                match ct::read() {
                    Ok(e) => {
                        if tx.blocking_send(e).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        })?;
        Ok(Self { stop, handle: Some(handle) })
    }

    /// Stops the thread and waits for it, so it cannot swallow keys meant for the shell after we exit; but
    /// only for [`READER_STOP_WAIT`]: when the terminal is gone (ssh dropped, tmux session killed) crossterm's
    /// `poll` spins on the dead tty and never returns, and quitting must not wait on it forever.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let deadline = std::time::Instant::now() + READER_STOP_WAIT;
            while !h.is_finished() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!("the terminal reader did not stop (terminal gone?); exiting without it");
            }
        }
    }
}

impl Drop for KeyReader {
    fn drop(&mut self) {
        // On an early return the thread is not joined (it may be blocked sending), only told to stop.
        self.stop.store(true, Ordering::Relaxed);
    }
}
