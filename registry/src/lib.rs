//! qvoice-registry: the directory and call-signaling server.
//!
//! It keeps the user directory (username → identity key, signed ML-KEM prekey, media port) in
//! SQLite, relays the three signed handshake messages (OFFER, ANSWER, REVEAL) between the parties
//! of a call after checking their structure and signatures, and pushes call and presence events
//! over Server-Sent Events. It never sees media keys: those come out of the handshake on the
//! clients only.
//!
//! Layout: [`store`] (SQLite + cache), [`calls`] (pure call state machine), [`events`] (push
//! streams), [`auth`] (signed requests, replay cache), [`floor`] (replay protection persisted across
//! restarts), [`limits`] (governor), [`conn`] (accept loop: connection timeouts, cap, shutdown
//! deadline), [`metrics`], [`api`] (HTTP handlers). All time comes from the injected
//! [`clock::Clock`]; one sweeper task applies ringing timeouts and purges ended calls. [`spawn`] runs a
//! whole registry in-process on any address, which is what the client's integration tests use.
//! `docs/SECURITY.md` has the threat model these limits answer.

pub mod api;
pub mod auth;
pub mod calls;
pub mod clock;
pub mod conn;
pub mod domain;
pub mod error;
pub mod events;
pub mod floor;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod store;
pub mod turn;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::auth::ReplayCache;
use crate::calls::{CallBook, CallState, Notice};
use crate::clock::{Clock, SystemClock};
use crate::conn::{ConnLimits, ConnStats};
use crate::domain::files::{FileStore, FilesConfig};
use crate::events::Hub;
use crate::floor::Floors;
use crate::limits::{Limiters, RateLimits};
use crate::metrics::Metrics;
use crate::store::Store;

pub use crate::clock::ManualClock;
pub use crate::error::ApiError;

/// Default listen address (the seed's).
pub const DEFAULT_BIND: &str = "0.0.0.0:5001";

/// Everything a registry instance needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// SQLite database file.
    pub db_path: PathBuf,
    /// How long a call may ring before it becomes `missed` (and an accepted call may wait for the
    /// caller's REVEAL before it becomes `failed`).
    pub ringing_timeout: Duration,
    /// How long terminal calls stay readable.
    pub purge_after: Duration,
    /// Largest allowed difference between a request timestamp and server time, in ms.
    pub max_skew_ms: u64,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Longest `/call/pending?wait=` long-poll.
    pub long_poll_max: Duration,
    /// Keep-alive comment interval on `/events`.
    pub sse_keepalive: Duration,
    /// Abuse limits.
    pub rate_limits: RateLimits,
    /// Connection timeouts, cap and shutdown deadline.
    pub connections: ConnLimits,
    /// Most `/events` streams per user; one more ends the oldest.
    pub max_streams_per_user: usize,
    /// Most calls ringing for one callee at once; one more is refused `busy`.
    pub max_ringing_per_callee: usize,
    /// Serve `/metrics` on the main address to requests with `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Serve `/metrics` (without a token) on this separate address, e.g. 127.0.0.1:9101.
    pub metrics_bind: Option<SocketAddr>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// The canonical origins (`scheme://host:port`, see `qvoice_proto::auth::origin_of_url`) clients
    /// reach this registry at; a signed request must name one of them. Empty: the request's own `Host`
    /// header is trusted (fine on loopback and in tests; set it in production, see docs/REGISTRY.md).
    pub public_origins: Vec<String>,
    /// STUN/TURN servers advertised to clients, with the TURN shared secret.
    pub media_servers: turn::MediaServers,
    /// File transfer: where files are stored, limits, TTL.
    pub files: FilesConfig,
}

impl Config {
    /// Defaults (bind 0.0.0.0:5001, ringing 45 s, purge 5 min, skew 2 min, body 64 KiB) with the
    /// database at `db_path`.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 5001)),
            db_path: db_path.into(),
            ringing_timeout: Duration::from_secs(45),
            purge_after: Duration::from_secs(300),
            max_skew_ms: 120_000,
            body_limit: 64 * 1024,
            long_poll_max: Duration::from_secs(30),
            sse_keepalive: Duration::from_secs(15),
            rate_limits: RateLimits::default(),
            connections: ConnLimits::default(),
            max_streams_per_user: events::STREAMS_PER_USER,
            max_ringing_per_callee: calls::MAX_RINGING_PER_CALLEE,
            metrics_token: None,
            metrics_bind: None,
            clock: Arc::new(SystemClock),
            public_origins: Vec::new(),
            media_servers: turn::MediaServers { turn_ttl: turn::DEFAULT_TURN_TTL, ..Default::default() },
            files: FilesConfig::default(),
        }
    }

    /// The default database path: `$XDG_DATA_HOME/qvoice/registry.sqlite3` (platform equivalent).
    ///
    /// Fails when the platform has no home directory.
    pub fn default_db_path() -> anyhow::Result<PathBuf> {
        let dirs = directories::ProjectDirs::from("", "", "qvoice")
            .context("no home directory to put the database in; pass --db")?;
        Ok(dirs.data_dir().join("registry.sqlite3"))
    }
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Store,
    files: FileStore,
    calls: Mutex<CallBook>,
    hub: Hub,
    replay: ReplayCache,
    floors: Floors,
    limiters: Limiters,
    metrics: Metrics,
    conn_stats: Arc<ConnStats>,
    call_created: Notify,
    shutdown_tx: watch::Sender<bool>,
}

/// Shared state of one registry instance; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// Opens the database and builds the state.
    ///
    /// Fails when the database cannot be opened or migrated.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let store = Store::open(&config.db_path)?;
        let floors = Floors::new(store.request_floors()?);
        let files = FileStore::open(&config.files.dir_for(&config.db_path), config.files.clone())?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let calls = CallBook::new(ms(config.ringing_timeout), ms(config.purge_after))
            .with_max_ringing(config.max_ringing_per_callee);
        Ok(Self(Arc::new(Inner {
            limiters: Limiters::new(config.rate_limits),
            hub: Hub::with_max_per_user(shutdown_rx, config.max_streams_per_user),
            config,
            store,
            files,
            calls: Mutex::new(calls),
            replay: ReplayCache::default(),
            floors,
            metrics: Metrics::default(),
            conn_stats: Arc::default(),
            call_created: Notify::new(),
            shutdown_tx,
        })))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Current time from the injected clock (Unix ms).
    pub fn now_ms(&self) -> u64 {
        self.0.config.clock.now_ms()
    }

    /// The user directory.
    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// Stored files (manifests and encrypted chunks).
    pub fn files(&self) -> &FileStore {
        &self.0.files
    }

    /// The push hub.
    pub fn hub(&self) -> &Hub {
        &self.0.hub
    }

    /// The replay cache.
    pub fn replay(&self) -> &ReplayCache {
        &self.0.replay
    }

    /// The persisted replay floors.
    pub fn floors(&self) -> &Floors {
        &self.0.floors
    }

    /// What the connection layer did (open connections, timeouts, evictions).
    pub fn conn_stats(&self) -> &ConnStats {
        &self.0.conn_stats
    }

    /// The rate limiters.
    pub fn limiters(&self) -> &Limiters {
        &self.0.limiters
    }

    /// Request counters.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Runs `f` on the call book under its lock. Never hold it across an await.
    ///
    /// Fails with `Internal` if a previous holder panicked.
    pub fn with_calls<T>(&self, f: impl FnOnce(&mut CallBook) -> T) -> Result<T, ApiError> {
        let mut book = self.0.calls.lock().map_err(|_| ApiError::Internal(anyhow::anyhow!("call book poisoned")))?;
        Ok(f(&mut book))
    }

    /// Number of calls per state.
    pub fn call_counts(&self) -> HashMap<CallState, usize> {
        self.with_calls(|b| b.counts()).unwrap_or_default()
    }

    /// Delivers events produced by a call transition.
    pub fn deliver(&self, notices: Vec<Notice>) {
        for n in notices {
            self.0.hub.send(&n.to, &n.event);
        }
    }

    /// Wakes the sweeper (a call was created, so its deadline may be the earliest).
    pub fn call_created(&self) {
        self.0.call_created.notify_one();
    }

    /// Applies timeouts (ringing → missed, accepted → failed), purges old calls and expired replay
    /// entries, at the injected clock's current time. The sweeper calls this; tests driving a
    /// [`ManualClock`] call it after advancing time.
    pub fn sweep(&self) {
        let now = self.now_ms();
        let notices = self.with_calls(|b| b.sweep(now)).unwrap_or_default();
        self.deliver(notices);
        self.0.replay.prune(now);
    }

    /// Ends every `/events` stream; called on shutdown.
    pub fn begin_shutdown(&self) {
        self.0.shutdown_tx.send_replace(true);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.with_calls(|b| b.next_deadline()).ok().flatten()
    }
}

/// The HTTP application.
pub fn router(state: AppState) -> Router {
    let limit = state.config().body_limit;
    Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/register", post(api::register))
        .route("/fetch/{username}", get(api::fetch))
        .route("/users", get(api::users))
        .route("/call/initiate", post(api::initiate))
        .route("/call/pending/{username}", get(api::pending))
        .route("/call/accept", post(api::accept))
        .route("/call/confirm", post(api::confirm))
        .route("/call/reject", post(api::reject))
        .route("/call/cancel", post(api::cancel))
        .route("/call/hangup", post(api::hangup))
        .route("/call/status/{call_id}", get(api::status))
        .route("/events", get(api::events))
        .route("/turn/credentials", get(turn::credentials))
        .route("/files", get(http::files::list).post(http::files::create))
        .route("/files/{id}", get(http::files::get).delete(http::files::cancel))
        .route("/files/{id}/ack", post(http::files::ack))
        .route(
            "/files/{id}/chunks/{index}",
            put(http::files::put_chunk)
                .get(http::files::get_chunk)
                .layer(DefaultBodyLimit::max(http::files::MAX_CHUNK_BODY))
                .layer(axum::middleware::from_fn(http::files::chunk_size_guard)),
        )
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(json_rejections))
        .layer(axum::middleware::from_fn_with_state(state.clone(), request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Bounds the time to answer a request, reading its body included (slow uploads), by
/// `connections.request_timeout`; a long-poll gets its longest wait on top, and `/events` is bounded only
/// until its stream starts (the stream itself is bounded by its queue and the shutdown).
async fn request_timeout(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let base = state.config().connections.request_timeout;
    let limit = if req.uri().path().starts_with("/call/pending/") { base + state.config().long_poll_max } else { base };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::RequestTimeout(limit.as_secs()).into_response(),
    }
}

/// Gives axum's own extractor rejections (plain text, e.g. a path segment that is not UTF-8) the
/// registry's JSON error shape, so every 4xx is `{"error", "message"}` (found by the `registry_request`
/// fuzz target).
async fn json_rejections(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let resp = next.run(req).await;
    let is_json = resp.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/event-stream")
    });
    if !resp.status().is_client_error() || is_json {
        return resp;
    }
    let status = resp.status();
    let text = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let text = text.trim();
    let err = match status {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge(0),
        _ => ApiError::InvalidField(if text.is_empty() { "malformed request".to_owned() } else { text.to_owned() }),
    };
    let mut out = err.into_response();
    *out.status_mut() = status;
    out
}

/// The router of the separate metrics address: `/metrics` without a token, nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics_open))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

async fn sweeper(state: AppState, mut shutdown: watch::Receiver<bool>) {
    // The deadline is in the injected clock's time; capping the sleep at one second keeps a manual
    // or jumping clock honest, and tests call `AppState::sweep` directly anyway.
    let mut ticks: u32 = 0;
    loop {
        let now = state.now_ms();
        let wait_ms = state.next_deadline().map_or(1_000, |d| d.saturating_sub(now).min(1_000));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            () = state.0.call_created.notified() => continue,
            _ = shutdown.changed() => return,
        }
        state.sweep();
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(60) {
            state.limiters().shrink();
        }
    }
}

/// Serves `state` on `listener` (and `/metrics` on `config.metrics_bind`, if set) until `shutdown`
/// completes, then stops accepting, ends push streams and long-polls, gives in-flight requests
/// `connections.shutdown_grace` to finish, and writes pending replay floors.
///
/// Fails when the metrics address cannot be bound or a listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = state.config().connections;
    let metrics_listener = match state.config().metrics_bind {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics served");
            Some(l)
        }
        None => None,
    };
    let sweep = tokio::spawn(sweeper(state.clone(), state.hub().shutdown()));
    let floors = tokio::spawn(Floors::run_writer(state.clone(), state.hub().shutdown()));
    let file_sweep =
        tokio::spawn(http::files::sweeper(state.clone(), state.config().files.sweep_interval, state.hub().shutdown()));
    let st = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        st.begin_shutdown();
    });
    let metrics_task = metrics_listener.map(|l| {
        let stats = Arc::new(ConnStats::default());
        tokio::spawn(conn::serve_connections(l, metrics_router(state.clone()), limits, stats, state.hub().shutdown()))
    });
    let stats = state.0.conn_stats.clone();
    let result = conn::serve_connections(listener, router(state.clone()), limits, stats, state.hub().shutdown())
        .await
        .context("serving HTTP");
    state.begin_shutdown();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = sweep.await;
    let _ = floors.await;
    let _ = file_sweep.await;
    result
}

/// A registry running in the background of the current tokio runtime.
#[derive(Debug)]
pub struct RunningRegistry {
    /// The address it listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// Its state (for tests: sweep after advancing a manual clock, inspect the store).
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRegistry {
    /// Base URL, e.g. `http://127.0.0.1:43121`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully and waits for the server to finish.
    ///
    /// Fails when the server task failed.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.context("registry task panicked")?
    }
}

impl Drop for RunningRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens the database, binds `config.bind` (use port 0 for tests) and serves in a background task.
///
/// Fails when the database cannot be opened or the address cannot be bound.
pub async fn spawn(config: Config) -> anyhow::Result<RunningRegistry> {
    let listener = TcpListener::bind(config.bind).await.with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(RunningRegistry { addr, state, stop: Some(stop), task })
}
