//! `qvoice call` and `qvoice listen`: a call without the TUI. Events go to stdout (one JSON object per line
//! with `--json`), commands come from stdin lines and signals.

use std::time::Duration;

use anyhow::{Context as _, bail};
use qvoice::config::{Config, Paths};
use qvoice::session::store::Keystore;
use qvoice::session::{EndReason, SessionCommand, SessionEvent};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use super::UsageError;
use super::args::IoArgs;
use super::options::session_options;

/// What a headless session does.
pub enum Mode {
    Call { name: String, duration: Option<f64> },
    Listen { auto_answer: bool, once: bool },
}

/// The exit code of a call that ended with `reason` (the table in `qvoice --help`).
pub fn exit_code(reason: &EndReason) -> u8 {
    match reason {
        EndReason::LocalHangup | EndReason::RemoteHangup => 0,
        EndReason::Rejected
        | EndReason::Cancelled
        | EndReason::Missed
        | EndReason::Busy
        | EndReason::Offline
        | EndReason::UnknownUser
        | EndReason::Incompatible(_)
        | EndReason::PrekeyExpired(_) => 4,
        EndReason::NoAudio(_) => 5,
        EndReason::SecurityFailure(_) | EndReason::SasMismatch => 6,
        EndReason::PeerVanished | EndReason::MediaFailed(_) | EndReason::NoMediaPath(_) => 7,
        EndReason::Failed(_) => 1,
    }
}

fn print_event(ev: &SessionEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(ev) {
            println!("{line}");
        }
        return;
    }
    match ev {
        SessionEvent::Registered { username, registry, .. } => println!("registered as {username} at {registry}"),
        SessionEvent::Connection { detail, .. } => println!("{detail}"),
        SessionEvent::Contacts { .. }
        | SessionEvent::Metrics { .. }
        | SessionEvent::Presence { .. }
        | SessionEvent::History { .. }
        | SessionEvent::Audio { message: None, .. } => {}
        SessionEvent::Audio { message: Some(m), .. } => eprintln!("qvoice: {m}"),
        SessionEvent::AudioFlowing { .. } => println!("audio flowing"),
        SessionEvent::IncomingCall { from, call_id, trust } => {
            println!("incoming call from {from} ({trust:?}); type `accept` or `reject` (call {call_id})")
        }
        SessionEvent::CallWaiting { from, .. } => {
            println!("{from} is calling (call waiting); hang up to take the call")
        }
        SessionEvent::Dialing { to, .. } => println!("dialing {to}..."),
        SessionEvent::Ringing { to, .. } => println!("ringing {to}"),
        SessionEvent::SasReady { peer, sas, .. } => {
            println!("keys agreed with {peer}: compare the SAS aloud: {sas}")
        }
        SessionEvent::Active { peer, codec, .. } => println!("in call with {peer} ({codec}); type `hangup` to end"),
        SessionEvent::Path { path, .. } => println!("media path: {path}"),
        SessionEvent::Connecting { peer, .. } => println!("connecting media with {peer}..."),
        SessionEvent::Ended { peer, reason, duration_s, .. } => {
            println!("call with {peer} ended after {duration_s:.1} s: {}", reason.label())
        }
        SessionEvent::KeyWarning { username, pinned, offered } => println!(
            "WARNING: {username}'s identity key changed (pinned {pinned}, registry now offers {offered}). \
             Calls are blocked until you compare safety numbers and run `qvoice verify {username}`."
        ),
        SessionEvent::Recording { on: true, dir: Some(dir) } => {
            let dir = std::path::Path::new(dir);
            println!("recording to {} and {}", dir.join("sent.wav").display(), dir.join("received.wav").display())
        }
        SessionEvent::Recording { on, .. } => println!("recording {}", if *on { "on" } else { "off" }),
        SessionEvent::Muted { on } => println!("microphone {}", if *on { "muted" } else { "live" }),
        SessionEvent::Devices { input, output, .. } => println!("audio: input {input}, output {output}"),
        SessionEvent::AudioDevice { direction, device, detail, switched, .. } => {
            let now = if *switched { "switched to" } else { "using" };
            println!("{} {now} {device} ({detail})", direction.noun())
        }
        SessionEvent::AudioSwitchFailed { message, .. } => eprintln!("qvoice: {message}"),
        SessionEvent::IncomingFile { file_id, from, size, .. } => {
            println!("file from {from} ({size} bytes) waiting: qvoice receive {file_id}")
        }
        SessionEvent::FileClosed { file_id, peer, outcome, .. } => println!("file {file_id} with {peer}: {outcome}"),
        SessionEvent::Files { .. } | SessionEvent::FileProgress { .. } => {}
        SessionEvent::FileSent { to, name, size, .. } => println!("sent {name} ({size} bytes) to {to}"),
        SessionEvent::FileSaved { path, from, size, .. } => {
            println!("saved {path} ({size} bytes from {from}, verified)")
        }
        SessionEvent::FileDiscarded { file_id } => println!("discarded {file_id}"),
        SessionEvent::FileFailed { message, .. } => eprintln!("qvoice: {message}"),
        SessionEvent::Error { message } => eprintln!("qvoice: {message}"),
    }
}

/// Runs `call` or `listen` without a TUI: events go to stdout, commands come from stdin lines
/// (`accept`, `reject`, `hangup`, `mute`, `unmute`, `input SPEC`, `output SPEC`) and signals.
pub async fn headless(paths: &Paths, io: IoArgs, mode: Mode) -> anyhow::Result<u8> {
    if let Some(file) = io.input.as_deref().and_then(qvoice::config::wav_input_file)
        && !file.is_file()
    {
        return Err(UsageError(format!("--input {}: there is no such file", file.display())).into());
    }
    let cfg = Config::load(&paths.config_file)?;
    if cfg.registry.username.is_none() && !Keystore::path_in(&paths.data_dir).exists() {
        bail!("no identity yet; run `qvoice init --username NAME --registry URL` first");
    }
    let mut opts = session_options(paths, &cfg, &io)?;
    if let Mode::Call { name, .. } = &mode {
        let peer = super::init::parse_username(name)?;
        if peer == opts.keystore.username {
            return Err(UsageError(format!(
                "you cannot call yourself ({peer} is you); call another username, or try `qvoice demo` to call an \
                 echo contact that plays back what it hears"
            ))
            .into());
        }
    }
    if let Mode::Listen { auto_answer, .. } = mode {
        opts.auto_answer = auto_answer;
    }
    // Refuse before dialling or answering, not after the peer has picked up.
    let (input, output) = (opts.input.clone(), opts.output.clone());
    let checked = tokio::task::spawn_blocking(move || super::audio::check_devices(&input, &output))
        .await
        .context("audio device check panicked")?;
    if let Err(problem) = checked {
        let message = problem.message(&paths.config_file);
        if io.json {
            println!("{}", serde_json::json!({"event": "error", "message": message, "exit_code": 5}));
        }
        eprintln!("qvoice: {message}");
        return Ok(5);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (ev_tx, mut ev_rx) = mpsc::channel(512);
    let driver = tokio::spawn(qvoice::session::run(opts, cmd_rx, ev_tx));

    spawn_stdin_commands(cmd_tx.clone());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    if let Mode::Call { name, .. } = &mode {
        let _ = cmd_tx.send(SessionCommand::Dial(name.clone())).await;
    }
    let call_duration = match &mode {
        Mode::Call { duration, .. } => duration.map(Duration::from_secs_f64),
        Mode::Listen { .. } => None,
    };
    let mut hangup_at: Option<tokio::time::Instant> = None;
    let mut code = 0u8;
    let mut interrupted = false;
    loop {
        let hangup_timer = async {
            match hangup_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break };
                print_event(&ev, io.json);
                match &ev {
                    SessionEvent::Active { .. } => {
                        if let (Some(d), None) = (call_duration, hangup_at) {
                            hangup_at = Some(tokio::time::Instant::now() + d);
                        }
                    }
                    SessionEvent::Ended { reason, call_id, .. } => {
                        hangup_at = None;
                        code = match mode {
                            _ if interrupted => 0,
                            Mode::Call { .. } => exit_code(reason),
                            // A listener's calls ending (even unanswered) is normal; only failures count.
                            Mode::Listen { .. } => match exit_code(reason) {
                                4 => 0,
                                c => c,
                            },
                        };
                        let done = match mode {
                            Mode::Call { .. } => true,
                            Mode::Listen { once, .. } => once && !call_id.is_empty(),
                        };
                        if done || interrupted {
                            let _ = cmd_tx.send(SessionCommand::Shutdown).await;
                        }
                    }
                    _ => {}
                }
            }
            _ = hangup_timer => {
                hangup_at = None;
                let _ = cmd_tx.send(SessionCommand::Hangup).await;
            }
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                let _ = cmd_tx.send(SessionCommand::Shutdown).await;
            }
            _ = sigterm.recv() => {
                interrupted = true;
                let _ = cmd_tx.send(SessionCommand::Shutdown).await;
            }
        }
    }
    driver.await.context("session task panicked")??;
    Ok(code)
}

fn spawn_stdin_commands(tx: mpsc::Sender<SessionCommand>) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // `input SPEC` / `output SPEC` switch the call's devices (the rest of the line, so paths may
            // hold spaces).
            let rest = |w: &str| line.trim().strip_prefix(w).map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
            let mut words = line.split_whitespace();
            // Without an id, accept/reject apply to the call that is ringing now.
            let cmd = match (words.next(), words.next()) {
                (Some("accept"), id) => Some(SessionCommand::Accept(id.unwrap_or_default().to_owned())),
                (Some("reject"), id) => Some(SessionCommand::Reject(id.unwrap_or_default().to_owned())),
                (Some("hangup" | "bye"), _) => Some(SessionCommand::Hangup),
                (Some("mute"), _) => Some(SessionCommand::SetMute(true)),
                (Some("unmute"), _) => Some(SessionCommand::SetMute(false)),
                (Some("dial" | "call"), Some(name)) => Some(SessionCommand::Dial(name.to_owned())),
                (Some("verify"), Some(name)) => Some(SessionCommand::Verify(name.to_owned())),
                (Some("mismatch"), _) => Some(SessionCommand::SasMismatch),
                (Some("input"), Some(_)) => {
                    rest("input").map(|i| SessionCommand::SetDevices { input: Some(i), output: None })
                }
                (Some("output"), Some(_)) => {
                    rest("output").map(|o| SessionCommand::SetDevices { input: None, output: Some(o) })
                }
                _ => None,
            };
            if let Some(c) = cmd
                && tx.send(c).await.is_err()
            {
                break;
            }
        }
    });
}
