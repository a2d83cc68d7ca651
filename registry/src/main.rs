//! The `qvoice-registry` binary: parses flags, environment and an optional TOML config file, sets up
//! structured logging, and serves until SIGTERM or Ctrl-C. On start it prints `listening on ADDR`
//! on stdout (so scripts and tests can find a port-0 address).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use qvoice_registry::limits::RateLimits;
use qvoice_registry::{AppState, Config, serve};
use serde::Deserialize;

/// qvoice directory and call-signaling server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on [default: 0.0.0.0:5001].
    #[arg(long, env = "QVOICE_REGISTRY_BIND")]
    bind: Option<SocketAddr>,
    /// SQLite database file [default: XDG data dir/qvoice/registry.sqlite3].
    #[arg(long, env = "QVOICE_REGISTRY_DB")]
    db: Option<PathBuf>,
    /// TOML config file (keys: bind, db, ringing_timeout_secs, [rate_limits], [files]).
    #[arg(long, env = "QVOICE_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds a call rings before it is missed [default: 45].
    #[arg(long, env = "QVOICE_REGISTRY_RINGING_TIMEOUT")]
    ringing_timeout_secs: Option<u64>,
    /// Per-minute quota for /register and /call/initiate, per IP and per user (overrides the file).
    #[arg(long)]
    rate_per_minute: Option<u32>,
    /// Folder for transferred files (encrypted chunks and their index) [default: beside --db, `<name>.files`].
    #[arg(long, env = "QVOICE_REGISTRY_FILES_DIR")]
    files_dir: Option<PathBuf>,
    /// Largest file accepted, in MiB (encrypted size) [default: 2048].
    #[arg(long)]
    max_file_mib: Option<u64>,
    /// MiB one user may have waiting, as sender and as recipient [default: 4096].
    #[arg(long)]
    file_quota_mib: Option<u64>,
    /// Hours an unacknowledged file is kept [default: 168].
    #[arg(long)]
    file_ttl_hours: Option<u64>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "QVOICE_REGISTRY_LOG_JSON")]
    log_json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    db: Option<PathBuf>,
    ringing_timeout_secs: Option<u64>,
    rate_limits: Option<RateLimits>,
    files: Option<FilesFileConfig>,
}

/// `[files]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesFileConfig {
    dir: Option<PathBuf>,
    max_file_mib: Option<u64>,
    quota_mib: Option<u64>,
    ttl_hours: Option<u64>,
    max_files_per_sender: Option<u32>,
}

fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let file: FileConfig = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing config {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let db = match cli.db.clone().or(file.db) {
        Some(db) => db,
        None => Config::default_db_path()?,
    };
    let mut config = Config::new(db);
    if let Some(b) = cli.bind.or(file.bind) {
        config.bind = b;
    }
    if let Some(t) = cli.ringing_timeout_secs.or(file.ringing_timeout_secs) {
        config.ringing_timeout = Duration::from_secs(t.max(1));
    }
    if let Some(l) = file.rate_limits {
        config.rate_limits = l;
    }
    let f = file.files.unwrap_or_default();
    const MIB: u64 = 1 << 20;
    config.files.dir = cli.files_dir.clone().or(f.dir);
    if let Some(m) = cli.max_file_mib.or(f.max_file_mib) {
        config.files.max_file_bytes = m.saturating_mul(MIB);
    }
    if let Some(q) = cli.file_quota_mib.or(f.quota_mib) {
        config.files.sender_quota_bytes = q.saturating_mul(MIB);
        config.files.inbox_quota_bytes = q.saturating_mul(MIB);
    }
    if let Some(h) = cli.file_ttl_hours.or(f.ttl_hours) {
        config.files.ttl = Duration::from_secs(h.max(1).saturating_mul(3600));
    }
    if let Some(n) = f.max_files_per_sender {
        config.files.max_files_per_sender = n;
    }
    if let Some(n) = cli.rate_per_minute {
        config.rate_limits =
            RateLimits { register_per_ip: n, register_per_user: n, initiate_per_ip: n, initiate_per_user: n };
    }
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = build_config(&cli)?;
    let listener =
        tokio::net::TcpListener::bind(config.bind).await.with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(db = %config.db_path.display(), %addr, "starting qvoice-registry");
    let state = AppState::new(config)?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
