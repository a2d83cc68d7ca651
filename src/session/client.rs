//! HTTP client for qvoice-registry: signs every request with our identity key and turns the registry's
//! JSON errors into [`ClientError`]s that say what to do. Also reads the `/events` Server-Sent Events stream.

use std::sync::Arc;
use std::time::Duration;

use qvoice_proto::{IdentityKey, IdentitySecret, SignedPrekey, Username, auth, b64};
use qvoice_wire::{
    AcceptBody, CallStateResponse, ConfirmBody, EndBody, EndKind, ErrorBody, ErrorCode, Event, FetchResponse,
    InitiateBody, PendingResponse, RegisterBody, RegisterResponse, StatusResponse, UserEntry, UsersResponse,
};
use serde::Serialize;

/// Why a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection (registry down, wrong URL, network).
    #[error(
        "cannot reach the registry at {url}: {detail}. Check that qvoice-registry runs there and the URL in config.toml"
    )]
    Unreachable { url: String, detail: String },
    /// The registry answered with an error.
    #[error("registry refused the request ({status} {code}): {message}")]
    Api { status: u16, code: ErrorCode, message: String },
    /// The registry answered something we cannot use.
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The registry's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The error of a non-success response with body `bytes`.
    fn api(status: u16, bytes: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(b) => Self::Api { status, code: b.error, message: b.message },
            Err(_) => Self::Api {
                status,
                code: ErrorCode::Unknown,
                message: format!("(no error body: {})", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
            },
        }
    }
}

/// The three ways to end a call at the registry (docs/REGISTRY.md, "Hang-up responsibilities").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndRequest {
    /// `/call/reject`: the callee declines a ringing call.
    Reject,
    /// `/call/cancel`: the caller gives up before the call is active.
    Cancel,
    /// `/call/hangup`: either party ends an accepted or active call.
    Hangup,
}

impl EndRequest {
    fn path(self) -> &'static str {
        match self {
            Self::Reject => "/call/reject",
            Self::Cancel => "/call/cancel",
            Self::Hangup => "/call/hangup",
        }
    }
}

/// A user's public key bundle, checked: the prekey verifies under the identity key.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub username: Username,
    pub identity_key: IdentityKey,
    pub prekey: SignedPrekey,
    pub online: bool,
    pub display_name: Option<String>,
}

/// Signs and sends registry requests for one user.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Without a trailing slash.
    base: String,
    /// The registry's canonical origin (`scheme://host:port`), signed into every request.
    origin: String,
    user: Username,
    identity: Arc<IdentitySecret>,
    /// Last request timestamp: Ed25519 signatures are deterministic, so two identical requests signed in
    /// the same millisecond would be byte-identical and the registry would refuse the second as a replay.
    last_ts: Arc<std::sync::atomic::AtomicU64>,
}

/// Longest a single registry request may take; the driver awaits requests inline, so a hung connection
/// must not freeze hang-up or shutdown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The registry sends an SSE keep-alive every 15 s; silence for this long means a dead connection.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl RegistryClient {
    /// Fails when the registry URL is not an http(s) URL, or the HTTP client cannot be built (TLS setup).
    pub fn new(base: &str, user: Username, identity: Arc<IdentitySecret>) -> Result<Self, ClientError> {
        let origin = auth::origin_of_url(base).map_err(|_| {
            ClientError::Protocol(format!(
                "the registry URL {base:?} is not like http://host:port or https://host; fix [registry] url in config.toml"
            ))
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Below the registry's keep-alive timeout (30 s), so we never reuse a connection it is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| ClientError::Protocol(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            origin,
            user,
            identity,
            last_ts: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn username(&self) -> &Username {
        &self.user
    }

    fn signed(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.signed_as(method, path, body, "application/json")
    }

    /// A signed request whose body (if any) has `content_type` (file chunks are `application/octet-stream`).
    pub(crate) fn signed_as(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::RequestBuilder {
        let now = now_ms();
        let prev = self
            .last_ts
            .fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let ts = now.max(prev + 1);
        let sig =
            auth::sign_request(&self.identity, &self.origin, method.as_str(), path, self.user.as_str(), ts, &body);
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(auth::HEADER_USER, self.user.as_str())
            .header(auth::HEADER_ORIGIN, &self.origin)
            .header(auth::HEADER_TIMESTAMP, ts.to_string())
            .header(auth::HEADER_SIGNATURE, b64::encode(&sig));
        if !body.is_empty() {
            rb = rb.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
        }
        rb
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, ClientError> {
        self.send_within(rb, REQUEST_TIMEOUT).await
    }

    pub(crate) async fn send_within<T: serde::de::DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let resp = rb.timeout(timeout).send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(ClientError::api(status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// Sends `rb` and returns the raw body of a success (file chunks). Fails like JSON requests.
    pub(crate) async fn send_bytes(
        &self,
        rb: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let resp = rb.timeout(timeout).send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(ClientError::api(status.as_u16(), &bytes));
        }
        Ok(bytes.to_vec())
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable { url: self.base.clone(), detail: e.to_string() }
    }

    pub(crate) async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send(self.signed(reqwest::Method::POST, path, body)).await
    }

    pub(crate) async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.signed(reqwest::Method::GET, path, Vec::new())).await
    }

    /// Claims our name or updates our prekey / display name / port.
    pub async fn register(
        &self,
        prekey: &SignedPrekey,
        display_name: Option<&str>,
        media_port: Option<u16>,
    ) -> Result<RegisterResponse, ClientError> {
        let body = RegisterBody {
            username: self.user.as_str().to_owned(),
            identity_key: b64::encode(self.identity.public().as_bytes()),
            prekey: b64::encode(&prekey.to_bytes()),
            display_name: display_name.map(str::to_owned),
            media_port,
        };
        self.post("/register", &body).await
    }

    /// Fetches and checks a user's key bundle: the prekey must be signed by the identity key.
    pub async fn fetch(&self, user: &Username) -> Result<Bundle, ClientError> {
        // Signed, so the registry charges it to us rather than to our address's public-read budget.
        let r: FetchResponse = self.get(&format!("/fetch/{user}")).await?;
        let bad = |what: &str| ClientError::Protocol(format!("{what} of {user} is invalid"));
        let identity_key = IdentityKey::from_bytes(&b64::decode(&r.identity_key).map_err(|_| bad("identity key"))?)
            .map_err(|_| bad("identity key"))?;
        let prekey =
            SignedPrekey::parse(&b64::decode(&r.prekey).map_err(|_| bad("prekey"))?).map_err(|_| bad("prekey"))?;
        prekey.verify(&identity_key).map_err(|_| bad("prekey signature"))?;
        Ok(Bundle { username: user.clone(), identity_key, prekey, online: r.online, display_name: r.display_name })
    }

    /// The STUN servers and short-lived TURN credentials the registry hands out for NAT traversal.
    pub async fn media_servers(&self) -> Result<qvoice_wire::MediaServersResponse, ClientError> {
        self.get("/turn/credentials").await
    }

    /// The whole directory (follows pagination, at most 20 pages).
    pub async fn users(&self) -> Result<Vec<UserEntry>, ClientError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..20 {
            let path = match &after {
                Some(a) => format!("/users?limit=200&after={a}"),
                None => "/users?limit=200".to_owned(),
            };
            let page: UsersResponse = self.get(&path).await?;
            out.extend(page.users);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out)
    }

    pub async fn initiate(&self, offer: &[u8]) -> Result<CallStateResponse, ClientError> {
        self.post("/call/initiate", &InitiateBody { offer: b64::encode(offer) }).await
    }

    pub async fn accept(&self, call_id: &str, answer: &[u8]) -> Result<CallStateResponse, ClientError> {
        self.post("/call/accept", &AcceptBody { call_id: call_id.to_owned(), answer: b64::encode(answer) }).await
    }

    pub async fn confirm(&self, call_id: &str, reveal: &[u8]) -> Result<CallStateResponse, ClientError> {
        self.post("/call/confirm", &ConfirmBody { call_id: call_id.to_owned(), reveal: b64::encode(reveal) }).await
    }

    /// Ends a call at the registry, telling the other party `kind` (absent: a plain hang-up) and `reason`.
    pub async fn end(
        &self,
        what: EndRequest,
        call_id: &str,
        kind: Option<EndKind>,
        reason: Option<&str>,
    ) -> Result<CallStateResponse, ClientError> {
        let body = EndBody { call_id: call_id.to_owned(), reason: reason.map(str::to_owned), kind };
        self.post(what.path(), &body).await
    }

    pub async fn status(&self, call_id: &str) -> Result<StatusResponse, ClientError> {
        self.get(&format!("/call/status/{call_id}")).await
    }

    /// The seed's polling, as a long-poll of up to `wait` seconds.
    pub async fn pending(&self, wait: u64) -> Result<PendingResponse, ClientError> {
        let path = format!("/call/pending/{}?wait={wait}", self.user);
        let rb = self.signed(reqwest::Method::GET, &path, Vec::new());
        self.send_within(rb, REQUEST_TIMEOUT + Duration::from_secs(wait)).await
    }

    /// Opens `/events` and forwards each event to `tx` until the stream ends or `tx` closes.
    /// Fails when the stream cannot be opened or breaks.
    pub async fn stream_events(&self, tx: &tokio::sync::mpsc::Sender<Event>) -> Result<(), ClientError> {
        let mut resp = self
            .signed(reqwest::Method::GET, "/events", Vec::new())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(ClientError::api(status, &bytes));
        }
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(STREAM_IDLE_TIMEOUT, resp.chunk()).await {
                Err(_) => {
                    return Err(ClientError::Unreachable {
                        url: self.base.clone(),
                        detail: "event stream silent for 45 s".into(),
                    });
                }
                Ok(r) => r.map_err(|e| self.unreachable(&e))?,
            };
            let Some(chunk) = chunk else { break };
            let dropped = parser.dropped();
            let events = parser.push(&chunk);
            if parser.dropped() > dropped {
                tracing::warn!(dropped = parser.dropped(), "ignoring an oversized event from the registry");
            }
            for data in events {
                match serde_json::from_str::<Event>(&data) {
                    Ok(ev) => {
                        if tx.send(ev).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring unparsable registry event"),
                }
            }
        }
        Err(ClientError::Unreachable { url: self.base.clone(), detail: "event stream closed".into() })
    }
}

pub use super::sse::SseParser;
