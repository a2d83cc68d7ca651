//! The `qvoice` command: identity setup, contacts, and calls, headless (`call`, `listen`) or in the TUI.
//!
//! Exit codes: 0 success (the call happened and ended normally); 1 other error; 2 bad command line;
//! 3 registry unreachable; 4 the call did not happen (rejected, busy, missed, offline, cancelled, unknown
//! user); 5 no usable audio device; 6 security check failed (identity key changed, handshake verification);
//! 7 the call dropped (peer vanished, media failure).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use qvoice::config::{Config, Paths};
use qvoice::media::{AudioIn, AudioOut, Impairment};
use qvoice::session::client::{ClientError, RegistryClient};
use qvoice::session::store::{ContactBook, Keystore};
use qvoice::session::{EndReason, SessionCommand, SessionEvent, SessionOptions};
use qvoice_proto::{Codec, Username, safety_number};
use tokio::io::AsyncBufReadExt as _;

/// The CLI's commands by topic (`src/cli/`); only file transfer lives there so far.
mod cli {
    pub mod files;
}
use tokio::sync::mpsc;

#[derive(Parser, Debug)]
#[command(name = "qvoice", version, about = "Post-quantum end-to-end encrypted voice calls from a terminal")]
struct Cli {
    /// Keep config and keys under this folder instead of the XDG directories.
    #[arg(long, env = "QVOICE_HOME", global = true)]
    home: Option<PathBuf>,
    /// Without a command, opens the TUI.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The terminal UI: contacts, one-key dialing, call control and live gauges (the default).
    Tui,
    /// Try qvoice in one process: a local registry, an `echo` contact that plays back what it hears,
    /// and the TUI logged in as `you`.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the demo keeps its registry database, keys and recordings (default: a temp folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create your identity key and prekey, write the config, and register.
    Init {
        #[arg(long)]
        username: String,
        /// Registry base URL, e.g. http://127.0.0.1:5001
        #[arg(long)]
        registry: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Replace an existing identity (contacts will see a key change).
        #[arg(long)]
        force: bool,
    },
    /// Show your username, registry and identity fingerprint.
    Whoami,
    /// List pinned contacts with their trust state and safety numbers.
    Contacts,
    /// Mark a contact verified after comparing the safety number (accepts a changed key).
    Verify { name: String },
    /// Make a new signed prekey current and publish it.
    RotatePrekey,
    /// List audio devices.
    Devices,
    /// Call someone and stay in the call until hangup, --duration, or ctrl-c.
    Call {
        name: String,
        /// Hang up this many seconds after the call becomes active.
        #[arg(long)]
        duration: Option<f64>,
        #[command(flatten)]
        io: IoArgs,
    },
    /// Send a file, end-to-end encrypted, through the registry (the recipient may be offline).
    Send(cli::files::SendArgs),
    /// List files waiting for you (sender, size, trust, name) and your sent files not yet received.
    Files(cli::files::FilesArgs),
    /// Download, verify and save a waiting file (or --all); --discard deletes it unread.
    Receive(cli::files::ReceiveArgs),
    /// Wait for calls (ctrl-c to stop).
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
struct IoArgs {
    /// Microphone: `default`, a device name, `silence`, or a .wav file to send.
    #[arg(long)]
    input: Option<String>,
    /// Speaker: `default`, a device name, `null`, or a .wav file to write what you hear.
    #[arg(long)]
    output: Option<String>,
    /// Record every call into this folder (sent.wav and received.wav per call).
    #[arg(long)]
    record_dir: Option<PathBuf>,
    /// Print one JSON object per event line.
    #[arg(long)]
    json: bool,
    /// Codec preference: opus or pcm.
    #[arg(long)]
    codec: Option<String>,
    /// End the call after this many seconds without media from the peer.
    #[arg(long)]
    peer_timeout: Option<u64>,
    /// Simulated loss on outgoing media, percent.
    #[arg(long, default_value_t = 0.0)]
    sim_loss: f64,
    /// Mean loss burst length in packets (1 = random loss).
    #[arg(long, default_value_t = 1.0)]
    sim_burst: f64,
    /// Simulated extra delay, e.g. 40ms.
    #[arg(long, value_parser = parse_ms)]
    sim_delay: Option<Duration>,
    /// Simulated jitter, e.g. 30ms.
    #[arg(long, value_parser = parse_ms)]
    sim_jitter: Option<Duration>,
    /// Seed of the impairment simulation.
    #[arg(long, default_value_t = 1)]
    sim_seed: u64,
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    let n = s.strip_suffix("ms").unwrap_or(s);
    n.trim().parse::<u64>().map(Duration::from_millis).map_err(|_| format!("{s:?} is not a duration like 30ms"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether the command draws the TUI (and so must not log to stderr).
fn uses_terminal(command: Option<&Command>) -> bool {
    match command {
        None | Some(Command::Tui) => true,
        #[cfg(feature = "demo")]
        Some(Command::Demo { .. }) => true,
        Some(_) => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !uses_terminal(cli.command.as_ref()) {
        qvoice::logging::to_stderr();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qvoice: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(real_main(cli));
    // The stdin reader sits in a blocking read that cannot be cancelled; do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("qvoice: {e:#}");
            let unreachable =
                e.chain().any(|c| matches!(c.downcast_ref::<ClientError>(), Some(ClientError::Unreachable { .. })));
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<u8> {
    let paths = Paths::resolve(cli.home.as_deref())?;
    let home = cli.home.clone();
    let Some(command) = cli.command else { return tui(&paths).await };
    match command {
        Command::Tui => tui(&paths).await,
        #[cfg(feature = "demo")]
        Command::Demo { dir } => demo(dir).await,
        Command::Init { username, registry, display_name, force } => {
            init(&paths, &username, &registry, display_name, force).await
        }
        Command::Whoami => whoami(&paths),
        Command::Contacts => contacts(&paths),
        Command::Verify { name } => {
            let ks = Keystore::load(&paths.data_dir)?;
            let mut book = ContactBook::load(&paths.data_dir)?;
            book.verify(&name)?;
            if let (Some(key), Ok(peer)) = (book.pinned(&name), Username::parse(&name)) {
                let sn = safety_number(&ks.username, &ks.identity.public(), &peer, &key);
                println!("{name} is now verified with the key whose safety number is {sn}");
            }
            Ok(0)
        }
        Command::RotatePrekey => rotate(&paths).await,
        Command::Devices => devices(),
        Command::Call { name, duration, io } => headless(&paths, io, Mode::Call { name, duration }).await,
        Command::Listen { auto_answer, once, io } => headless(&paths, io, Mode::Listen { auto_answer, once }).await,
        Command::Send(args) => cli::files::send(&paths, args).await,
        Command::Files(args) => cli::files::files(&paths, args).await,
        Command::Receive(args) => cli::files::receive(&paths, home.as_deref(), args).await,
    }
}

async fn init(
    paths: &Paths,
    username: &str,
    registry: &str,
    display_name: Option<String>,
    force: bool,
) -> anyhow::Result<u8> {
    let username = Username::parse(username).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ks = Keystore::create(&paths.data_dir, username.clone(), now_ms(), force)?;
    let mut cfg = Config::load(&paths.config_file)?;
    cfg.registry.url = registry.trim_end_matches('/').to_owned();
    cfg.registry.username = Some(username.to_string());
    cfg.registry.display_name = display_name.clone();
    cfg.save(&paths.config_file)?;
    let identity = std::sync::Arc::new(qvoice_proto::IdentitySecret::from_bytes(&ks.identity.to_bytes()));
    let client = RegistryClient::new(&cfg.registry.url, username.clone(), identity)?;
    let prekey = ks.signed_prekey();
    let resp = client.register(&prekey, display_name.as_deref(), None).await.context("registering")?;
    println!("registered {} at {} ({})", resp.username, cfg.registry.url, if resp.created { "new" } else { "updated" });
    println!("identity  {}", grouped_hex(ks.identity.public().as_bytes()));
    println!("keys in   {}", Keystore::path_in(&paths.data_dir).display());
    println!("config in {}", paths.config_file.display());
    Ok(0)
}

fn grouped_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes().chunks(8).filter_map(|c| std::str::from_utf8(c).ok()).collect::<Vec<_>>().join(" ")
}

fn whoami(paths: &Paths) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    let ks = Keystore::load(&paths.data_dir)?;
    println!("username  {}", ks.username);
    println!("registry  {}", cfg.registry.url);
    println!("identity  {}", grouped_hex(ks.identity.public().as_bytes()));
    println!("prekey    id {}", ks.current_prekey().id());
    let book = ContactBook::load(&paths.data_dir)?;
    for name in book.contacts.keys() {
        if let (Some(key), Ok(peer)) = (book.pinned(name), Username::parse(name)) {
            println!("safety number with {name}: {}", safety_number(&ks.username, &ks.identity.public(), &peer, &key));
        }
    }
    Ok(0)
}

fn contacts(paths: &Paths) -> anyhow::Result<u8> {
    let ks = Keystore::load(&paths.data_dir)?;
    let book = ContactBook::load(&paths.data_dir)?;
    if book.contacts.is_empty() {
        println!("no contacts yet: they are pinned when you first call or are called");
    }
    for name in book.contacts.keys() {
        let trust = book.trust(name);
        let Ok(peer) = Username::parse(name) else { continue };
        let Some(key) = book.pinned(name) else { continue };
        println!("{name:<20} {trust:?}");
        println!("  safety number {}", safety_number(&ks.username, &ks.identity.public(), &peer, &key));
        if trust == qvoice::session::Trust::KeyChanged {
            println!("  WARNING: the registry now serves a different identity key for {name}.");
            println!(
                "  Compare the safety number with {name} in person or by another channel, then `qvoice verify {name}`."
            );
        }
    }
    Ok(0)
}

async fn rotate(paths: &Paths) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    let mut ks = Keystore::load(&paths.data_dir)?;
    let id = ks.rotate_prekey(now_ms())?;
    let identity = std::sync::Arc::new(qvoice_proto::IdentitySecret::from_bytes(&ks.identity.to_bytes()));
    let client = RegistryClient::new(&cfg.registry.url, ks.username.clone(), identity)?;
    client.register(&ks.signed_prekey(), cfg.registry.display_name.as_deref(), None).await?;
    println!("prekey {id} is now current and published");
    Ok(0)
}

fn devices() -> anyhow::Result<u8> {
    match qvoice::media::list_devices_probed(true) {
        Ok(list) if !list.is_empty() => {
            println!("{:<7} {:<32} {:<26} DESCRIPTION", "", "NAME (--input/--output, [audio])", "NATIVE");
            for d in list {
                let caps = match (d.input, d.output) {
                    (true, true) => "in/out",
                    (true, false) => "in",
                    (false, true) => "out",
                    _ => "-",
                };
                let native = d.native.as_deref().unwrap_or("(cannot open now)");
                println!("{:<7} {:<32} {:<26} {}", caps, d.name, native, d.description);
            }
            println!("(a device can still fail when opened; pass --input/--output FILE.wav to use WAV files instead)");
            Ok(0)
        }
        Ok(_) => {
            println!("no audio devices found; use --input FILE.wav and --output FILE.wav");
            Ok(5)
        }
        Err(e) => {
            println!("{e}");
            Ok(5)
        }
    }
}

/// Runs the TUI against a session driver; returns when the user quits.
async fn run_tui(
    opts: SessionOptions,
    cfg: &Config,
    log: Option<mpsc::Receiver<String>>,
    log_file: &std::path::Path,
) -> anyhow::Result<()> {
    let _stderr = qvoice::logging::StderrToFile::new(log_file).context("sending stderr to the log file")?;
    let username = opts.keystore.username.to_string();
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (ev_tx, ev_rx) = mpsc::channel(512);
    let driver = tokio::spawn(qvoice::session::run(opts, cmd_rx, ev_tx));
    let ui = qvoice::tui::run(cfg.tui.clone(), username, ev_rx, cmd_tx.clone(), log).await;
    let _ = cmd_tx.send(SessionCommand::Shutdown).await;
    let session = driver.await.context("session task panicked")?;
    ui?;
    session
}

async fn tui(paths: &Paths) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    let opts = session_options(paths, &cfg, &IoArgs::default())?;
    let log = qvoice::logging::to_file_and_pane(&paths.log_file)?;
    run_tui(opts, &cfg, Some(log), &paths.log_file).await?;
    Ok(0)
}

#[cfg(feature = "demo")]
async fn demo(dir: Option<PathBuf>) -> anyhow::Result<u8> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("qvoice-demo-{}", std::process::id())));
    let log = qvoice::logging::to_file_and_pane(&dir.join("qvoice.log"))?;
    let devices = qvoice::demo::sound_card_works();
    let (demo, you) = qvoice::demo::Demo::start(&dir, devices).await?;
    tracing::info!(
        "demo: press d on `echo` to call it; you will hear yourself back after {:?}",
        qvoice::demo::ECHO_DELAY
    );
    tracing::info!("demo audio: {}", demo.audio_notice);
    let notice = demo.audio_notice.clone();
    let result = run_tui(you, &Config::default(), Some(log), &dir.join("qvoice.log")).await;
    demo.stop().await?;
    result?;
    println!("qvoice demo finished; {notice}");
    println!("demo files (registry database, keys, recordings, log) are in {}", dir.display());
    Ok(0)
}

enum Mode {
    Call { name: String, duration: Option<f64> },
    Listen { auto_answer: bool, once: bool },
}

/// Builds session options from the config file and command-line overrides.
fn session_options(paths: &Paths, cfg: &Config, io: &IoArgs) -> anyhow::Result<SessionOptions> {
    let ks = Keystore::load(&paths.data_dir)?;
    let contacts = ContactBook::load(&paths.data_dir)?;
    let mut opts = SessionOptions::new(cfg.registry.url.clone(), ks, contacts);
    opts.display_name = cfg.registry.display_name.clone();
    opts.input = AudioIn::from_spec(io.input.as_deref().unwrap_or(&cfg.audio.input));
    opts.output = AudioOut::from_spec(io.output.as_deref().unwrap_or(&cfg.audio.output));
    opts.record_dir = io.record_dir.clone().or_else(|| cfg.recording.dir.clone());
    opts.record_on = io.record_dir.is_some() || cfg.recording.enabled;
    let codec_name = io.codec.as_deref().unwrap_or(&cfg.audio.codec);
    let first =
        Codec::from_name(codec_name).with_context(|| format!("unknown codec {codec_name:?}; use opus or pcm"))?;
    opts.codecs = vec![first];
    opts.codecs.extend([Codec::Opus, Codec::Pcm16].into_iter().filter(|c| *c != first));
    opts.frame_ms = cfg.audio.frame_ms;
    opts.obfuscation = cfg.media.obfuscation;
    opts.media_port = cfg.media.port;
    opts.peer_timeout = Duration::from_secs(io.peer_timeout.unwrap_or(cfg.media.peer_timeout_s).max(1));
    opts.poll_fallback = cfg.registry.poll_fallback;
    if cfg.registry.prekey_rotation_days > 0 {
        opts.prekey_max_age = Some(Duration::from_secs(u64::from(cfg.registry.prekey_rotation_days) * 86_400));
    }
    opts.impairment = Impairment {
        loss_pct: io.sim_loss,
        burst_len: io.sim_burst.max(1.0),
        delay: io.sim_delay.unwrap_or_default(),
        jitter: io.sim_jitter.unwrap_or_default(),
        seed: io.sim_seed,
        ..Impairment::default()
    };
    Ok(opts)
}

fn exit_code(reason: &EndReason) -> u8 {
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
        EndReason::SecurityFailure(_) => 6,
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
        SessionEvent::Contacts { .. } | SessionEvent::Metrics { .. } | SessionEvent::Presence { .. } => {}
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
        SessionEvent::Recording { on, dir } => {
            println!("recording {} {}", if *on { "on" } else { "off" }, dir.as_deref().unwrap_or(""))
        }
        SessionEvent::Muted { on } => println!("microphone {}", if *on { "muted" } else { "live" }),
        SessionEvent::Devices { input, output, .. } => println!("audio: input {input}, output {output}"),
        SessionEvent::IncomingFile { file_id, from, size, .. } => {
            println!("file from {from} ({size} bytes) waiting: qvoice receive {file_id}")
        }
        SessionEvent::FileClosed { file_id, peer, outcome, .. } => println!("file {file_id} with {peer}: {outcome}"),
        SessionEvent::Error { message } => eprintln!("qvoice: {message}"),
    }
}

/// Runs `call` or `listen` without a TUI: events go to stdout, commands come from stdin lines
/// (`accept`, `reject`, `hangup`, `mute`, `unmute`) and signals.
async fn headless(paths: &Paths, io: IoArgs, mode: Mode) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    if cfg.registry.username.is_none() && !Keystore::path_in(&paths.data_dir).exists() {
        bail!("no identity yet; run `qvoice init --username NAME --registry URL` first");
    }
    let mut opts = session_options(paths, &cfg, &io)?;
    if let Mode::Listen { auto_answer, .. } = mode {
        opts.auto_answer = auto_answer;
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
