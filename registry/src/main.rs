//! The `qvoice-registry` binary: parses flags, environment and an optional TOML config file, sets up
//! structured logging, and serves until SIGTERM or Ctrl-C. On start it prints `listening on ADDR`
//! on stdout (so scripts and tests can find a port-0 address).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use qvoice_registry::conn::ConnLimits;
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
    /// TOML config file (keys: bind, db, ringing_timeout_secs, public_urls, metrics_bind, max_streams_per_user,
    /// max_ringing_per_callee, stun_servers, turn_servers, turn_secret_file, turn_ttl_secs, stun_bind,
    /// [rate_limits], [connections], [files]).
    #[arg(long, env = "QVOICE_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds a call rings before it is missed [default: 45].
    #[arg(long, env = "QVOICE_REGISTRY_RINGING_TIMEOUT")]
    ringing_timeout_secs: Option<u64>,
    /// Sets every per-minute quota to N (overrides the file's [rate_limits]).
    #[arg(long)]
    rate_per_minute: Option<u32>,
    /// The URL clients use to reach this registry, e.g. https://registry.example (repeatable). Signed
    /// requests name it, so they cannot be replayed to another registry; without it the request's Host
    /// header is trusted.
    #[arg(long = "public-url", env = "QVOICE_REGISTRY_PUBLIC_URL", value_delimiter = ',')]
    public_urls: Vec<String>,
    /// Most open client connections [default: 16384, lowered to the open-file limit].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a client has to send a complete request head [default: 10].
    #[arg(long)]
    header_timeout_secs: Option<f64>,
    /// Seconds an idle kept-alive connection stays open after a response [default: 30].
    #[arg(long)]
    keep_alive_secs: Option<f64>,
    /// Seconds to answer a request, body upload included [default: 15].
    #[arg(long)]
    request_timeout_secs: Option<f64>,
    /// Seconds in-flight requests get to finish on shutdown [default: 10].
    #[arg(long)]
    shutdown_grace_secs: Option<f64>,
    /// Serve /metrics on this separate address (e.g. 127.0.0.1:9101), without a token.
    #[arg(long, env = "QVOICE_REGISTRY_METRICS_BIND")]
    metrics_bind: Option<SocketAddr>,
    /// Serve /metrics on the main address to `Authorization: Bearer TOKEN` (use the environment variable
    /// rather than the flag: command lines are visible to other users).
    #[arg(long, env = "QVOICE_REGISTRY_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
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
    /// STUN server advertised to clients, HOST:PORT (repeat for several; coturn serves STUN too).
    #[arg(long = "stun-server", env = "QVOICE_REGISTRY_STUN_SERVERS", value_delimiter = ',')]
    stun_servers: Vec<String>,
    /// TURN relay (UDP) advertised to clients with short-lived credentials, HOST:PORT (repeatable).
    #[arg(long = "turn-server", env = "QVOICE_REGISTRY_TURN_SERVERS", value_delimiter = ',')]
    turn_servers: Vec<String>,
    /// File holding the relay's shared secret (coturn `static-auth-secret`); preferred over the variable.
    #[arg(long, env = "QVOICE_REGISTRY_TURN_SECRET_FILE")]
    turn_secret_file: Option<PathBuf>,
    /// Lifetime of handed-out TURN credentials in seconds [default: 43200].
    #[arg(long, env = "QVOICE_REGISTRY_TURN_TTL")]
    turn_ttl_secs: Option<u64>,
    /// Also answer STUN Binding requests on this UDP address (e.g. 0.0.0.0:3478).
    #[arg(long, env = "QVOICE_REGISTRY_STUN_BIND")]
    stun_bind: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    db: Option<PathBuf>,
    ringing_timeout_secs: Option<u64>,
    rate_limits: Option<RateLimits>,
    public_urls: Option<Vec<String>>,
    stun_servers: Option<Vec<String>>,
    turn_servers: Option<Vec<String>>,
    turn_secret: Option<String>,
    turn_secret_file: Option<PathBuf>,
    turn_ttl_secs: Option<u64>,
    stun_bind: Option<SocketAddr>,
    connections: Option<ConnLimits>,
    metrics_bind: Option<SocketAddr>,
    max_streams_per_user: Option<usize>,
    max_ringing_per_callee: Option<usize>,
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
    let urls = if cli.public_urls.is_empty() { file.public_urls.unwrap_or_default() } else { cli.public_urls.clone() };
    for url in urls {
        let origin = qvoice_proto::auth::origin_of_url(&url).with_context(|| format!("public URL {url:?}"))?;
        config.public_origins.push(origin);
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
        config.rate_limits = RateLimits::all(n);
    }
    if let Some(c) = file.connections {
        config.connections = c;
    }
    let secs = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).with_context(|| format!("--{name} must be a non-negative number of seconds"))
    };
    let c = &mut config.connections;
    if let Some(n) = cli.max_connections {
        c.max_connections = n;
    }
    if let Some(v) = cli.header_timeout_secs {
        c.header_timeout = secs("header-timeout-secs", v)?;
    }
    if let Some(v) = cli.keep_alive_secs {
        c.keep_alive_timeout = secs("keep-alive-secs", v)?;
    }
    if let Some(v) = cli.request_timeout_secs {
        c.request_timeout = secs("request-timeout-secs", v)?;
    }
    if let Some(v) = cli.shutdown_grace_secs {
        c.shutdown_grace = secs("shutdown-grace-secs", v)?;
    }
    config.metrics_bind = cli.metrics_bind.or(file.metrics_bind);
    config.metrics_token = cli.metrics_token.clone().filter(|t| !t.is_empty());
    if let Some(n) = file.max_streams_per_user {
        config.max_streams_per_user = n.max(1);
    }
    if let Some(n) = file.max_ringing_per_callee {
        config.max_ringing_per_callee = n.max(1);
    }
    let ms = &mut config.media_servers;
    ms.stun =
        if cli.stun_servers.is_empty() { file.stun_servers.unwrap_or_default() } else { cli.stun_servers.clone() };
    ms.turn =
        if cli.turn_servers.is_empty() { file.turn_servers.unwrap_or_default() } else { cli.turn_servers.clone() };
    let secret_file = cli.turn_secret_file.clone().or(file.turn_secret_file);
    ms.turn_secret = match secret_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading the TURN secret file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("QVOICE_REGISTRY_TURN_SECRET").ok().or(file.turn_secret),
    };
    if let Some(t) = cli.turn_ttl_secs.or(file.turn_ttl_secs) {
        ms.turn_ttl = Duration::from_secs(t.max(60));
    }
    if !ms.turn.is_empty() && ms.turn_secret.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "a TURN server is configured but no shared secret: set turn_secret_file (or QVOICE_REGISTRY_TURN_SECRET) \
             to coturn's static-auth-secret"
        );
    }
    Ok(config)
}

fn stun_bind(cli: &Cli) -> anyhow::Result<Option<SocketAddr>> {
    let file: FileConfig = match &cli.config {
        Some(p) => toml::from_str(&std::fs::read_to_string(p)?)?,
        None => FileConfig::default(),
    };
    Ok(cli.stun_bind.or(file.stun_bind))
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
    tracing::info!(db = %config.db_path.display(), %addr, origins = ?config.public_origins, "starting qvoice-registry");
    if config.public_origins.is_empty() && !addr.ip().is_loopback() {
        tracing::warn!(
            "no --public-url set: signed requests are checked against the Host header they carry; set --public-url \
             to the URL clients use so requests signed for another registry are refused"
        );
    }
    tracing::info!(stun = ?config.media_servers.stun, turn = ?config.media_servers.turn, "media servers");
    let max_conn = qvoice_registry::conn::effective_max_connections(config.connections.max_connections);
    tracing::info!(db = %config.db_path.display(), %addr, max_connections = max_conn, "starting qvoice-registry");
    let state = AppState::new(config)?;
    if let Some(addr) = stun_bind(&cli)? {
        let sock = tokio::net::UdpSocket::bind(addr).await.with_context(|| format!("binding STUN on {addr}"))?;
        tracing::info!(addr = %sock.local_addr()?, "answering STUN Binding requests");
        tokio::spawn(qvoice_registry::turn::serve_stun(sock));
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
