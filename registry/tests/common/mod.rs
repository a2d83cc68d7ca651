//! Shared test harness: real registry state on a temporary SQLite file, driven either through
//! `router(state)` without a socket or through a real server on 127.0.0.1:0, with a manual clock,
//! real identity keys, real handshake messages from qvoice-proto, and an SSE reader.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use qvoice_proto::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Candidate, Codec, IdentityKey, IdentitySecret, Offer,
    PrekeySecret, Reveal, SessionKeys, SignedPrekey, Username, b64,
};
use qvoice_registry::clock::Clock as _;
use qvoice_registry::{AppState, Config, ManualClock, RunningRegistry, router, spawn};
use qvoice_wire::{ErrorBody, ErrorCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;

/// The origin every test registry is configured with (`public_origins`, `--public-url`) and every test
/// request is signed for; requests reach the registry at 127.0.0.1:PORT or through the bare router.
pub const ORIGIN: &str = "http://registry.test:80";

pub struct Party {
    pub name: String,
    pub id: IdentitySecret,
    pub prekey: PrekeySecret,
}

impl Party {
    pub fn new(name: &str) -> Self {
        let mut rng = rand::rng();
        let id = IdentitySecret::generate(&mut rng);
        let prekey = PrekeySecret::generate(&mut rng, 7);
        Self { name: name.to_owned(), id, prekey }
    }

    pub fn key(&self) -> IdentityKey {
        self.id.public()
    }

    /// The prekey, valid until ten years after [`T0`]: the same key serves the manual-clock tests (at
    /// T0) and the real-binary ones (system clock).
    pub fn signed_prekey(&self) -> SignedPrekey {
        self.prekey.sign(&self.id, T0 + 10 * 365 * 86_400_000)
    }

    pub fn register_body(&self) -> Value {
        json!({
            "username": self.name,
            "identity_key": b64::encode(self.key().as_bytes()),
            "prekey": b64::encode(&self.signed_prekey().to_bytes()),
            "display_name": format!("{} (test)", self.name),
            "media_port": 5556,
        })
    }

    pub fn auth_headers(&self, method: &str, pq: &str, ts: u64, body: &[u8]) -> Vec<(String, String)> {
        let sig = qvoice_proto::auth::sign_request(&self.id, ORIGIN, method, pq, &self.name, ts, body);
        vec![
            (qvoice_proto::auth::HEADER_USER.to_owned(), self.name.clone()),
            (qvoice_proto::auth::HEADER_TIMESTAMP.to_owned(), ts.to_string()),
            (qvoice_proto::auth::HEADER_SIGNATURE.to_owned(), b64::encode(&sig)),
            (qvoice_proto::auth::HEADER_ORIGIN.to_owned(), ORIGIN.to_owned()),
        ]
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub json: Value,
}

impl Resp {
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected response {:?}", self.json);
        &self.json
    }

    /// The error code of an error response (`Unknown` when the body is not an error body).
    pub fn code(&self) -> ErrorCode {
        serde_json::from_value::<ErrorBody>(self.json.clone()).map_or(ErrorCode::Unknown, |b| b.error)
    }

    #[track_caller]
    pub fn err(&self, status: u16, code: ErrorCode) {
        assert_eq!((self.status, self.code()), (status, code), "response {:?}", self.json);
        assert!(self.json["message"].as_str().is_some_and(|m| !m.is_empty()), "message missing: {:?}", self.json);
    }
}

pub enum Target {
    Router(axum::Router),
    Http { base: String, client: reqwest::Client, running: RunningRegistry },
}

pub struct Harness {
    /// Last timestamp signed: like a real client, never reuse one (Ed25519 is deterministic, so
    /// the same request at the same millisecond would be a replay).
    pub last_ts: std::sync::atomic::AtomicU64,
    pub target: Target,
    pub clock: ManualClock,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

pub fn config(dir: &tempfile::TempDir, clock: &ManualClock) -> Config {
    let mut c = Config::new(dir.path().join("registry.sqlite3"));
    c.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    c.clock = Arc::new(clock.clone());
    c.public_origins = vec![ORIGIN.to_owned()];
    c
}

impl Harness {
    /// Router-level: no socket, peer address faked as 192.0.2.1:4444.
    pub fn router() -> Self {
        Self::router_with(|_| {})
    }

    pub fn router_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut c = config(&dir, &clock);
        f(&mut c);
        let state = AppState::new(c).unwrap();
        let app = router(state.clone()).layer(MockConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4444))));
        Self { last_ts: 0.into(), target: Target::Router(app), clock, state, dir }
    }

    /// A real server on 127.0.0.1:0.
    pub async fn server() -> Self {
        Self::server_with(|_| {}).await
    }

    pub async fn server_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let mut c = config(&dir, &clock);
        f(&mut c);
        let running = spawn(c).await.unwrap();
        let state = running.state.clone();
        let base = running.url();
        let client = reqwest::Client::new();
        Self { last_ts: 0.into(), target: Target::Http { base, client, running }, clock, state, dir }
    }

    pub fn base(&self) -> &str {
        match &self.target {
            Target::Http { base, .. } => base,
            Target::Router(_) => panic!("router harness has no URL"),
        }
    }

    pub async fn raw(&self, method: &str, pq: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> Resp {
        match &self.target {
            Target::Router(app) => {
                let mut b = axum::http::Request::builder().method(method).uri(pq);
                for (k, v) in &headers {
                    b = b.header(k, v);
                }
                if !body.is_empty() {
                    b = b.header("content-type", "application/json");
                }
                let resp = app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
                let status = resp.status().as_u16();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                Resp { status, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
            }
            Target::Http { base, client, .. } => {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                let mut b = client.request(m, format!("{base}{pq}")).body(body);
                for (k, v) in &headers {
                    b = b.header(k, v);
                }
                let resp = b.send().await.unwrap();
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.unwrap();
                Resp { status, json: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
            }
        }
    }

    /// A request signed by `who` at the clock's current time.
    pub async fn req(&self, method: &str, pq: &str, who: &Party, body: &Value) -> Resp {
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        let h = who.auth_headers(method, pq, self.ts(), &body);
        self.raw(method, pq, h, body).await
    }

    /// A fresh signing timestamp: the clock's time, or one past the last one used.
    pub fn ts(&self) -> u64 {
        let now = self.clock.now_ms();
        let prev = self.last_ts.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        if prev >= now { self.last_ts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 } else { now }
    }

    pub async fn get(&self, pq: &str, who: &Party) -> Resp {
        self.req("GET", pq, who, &Value::Null).await
    }

    pub async fn post(&self, pq: &str, who: &Party, body: Value) -> Resp {
        self.req("POST", pq, who, &body).await
    }

    pub async fn register(&self, p: &Party) -> Resp {
        self.post("/register", p, p.register_body()).await
    }

    pub async fn status(&self, who: &Party, call_id: &str) -> Resp {
        self.get(&format!("/call/status/{call_id}"), who).await
    }

    /// Builds a real OFFER from `caller` to `callee` (callee's keys taken from the Party, not the
    /// registry, so offers to unregistered users can be made too).
    pub fn offer(&self, caller: &Party, callee: &Party) -> (Caller, Offer) {
        offer_at(self.clock.now_ms(), caller, callee)
    }

    pub async fn initiate(&self, caller: &Party, offer: &Offer) -> Resp {
        self.post("/call/initiate", caller, json!({ "offer": b64::encode(offer.to_bytes()) })).await
    }

    pub fn answer(&self, callee: &Party, caller: &Party, offer: &Offer) -> (Callee, Answer) {
        answer_at(self.clock.now_ms(), callee, caller, offer)
    }

    pub async fn accept(&self, callee: &Party, answer: &Answer) -> Resp {
        let body = json!({ "call_id": answer.call_id.to_hex(), "answer": b64::encode(answer.to_bytes()) });
        self.post("/call/accept", callee, body).await
    }

    pub async fn confirm(&self, caller: &Party, reveal: &Reveal) -> Resp {
        let body = json!({ "call_id": reveal.call_id.to_hex(), "reveal": b64::encode(reveal.to_bytes()) });
        self.post("/call/confirm", caller, body).await
    }

    /// Drives a call to `ringing` and returns the caller machine, offer and call id.
    pub async fn ring(&self, caller: &Party, callee: &Party) -> (Caller, Offer, String) {
        let (c, offer) = self.offer(caller, callee);
        let id = offer.call_id.to_hex();
        self.initiate(caller, &offer).await.ok(201);
        (c, offer, id)
    }

    pub async fn call_state(&self, who: &Party, id: &str) -> String {
        self.status(who, id).await.ok(200)["state"].as_str().unwrap().to_owned()
    }
}

pub fn offer_at(now: u64, caller: &Party, callee: &Party) -> (Caller, Offer) {
    let params = CallerParams {
        caller: Username::parse(&caller.name).unwrap(),
        callee: Username::parse(&callee.name).unwrap(),
        codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
        frame_ms: 20,
        candidates: vec![Candidate::host("127.0.0.1:5556".parse().unwrap())],
        obfuscation: true,
    };
    Caller::start(&mut rand::rng(), now, &caller.id, params, &callee.key(), &callee.signed_prekey()).unwrap()
}

pub fn answer_at(now: u64, callee: &Party, caller: &Party, offer: &Offer) -> (Callee, Answer) {
    let params = CalleeParams {
        callee: Username::parse(&callee.name).unwrap(),
        codecs: vec![Codec::Opus.into()],
        candidates: vec![Candidate::host("127.0.0.1:5557".parse().unwrap())],
        obfuscation: true,
    };
    Callee::on_offer(&mut rand::rng(), now, &callee.id, &caller.key(), offer, params).unwrap()
}

pub fn finish(
    caller: Caller,
    callee: Callee,
    answer: &Answer,
    callee_prekeys: &[PrekeySecret],
) -> (Reveal, SessionKeys, SessionKeys) {
    let (reveal, ck) = caller.on_answer(&mut rand::rng(), answer).unwrap();
    let ek = callee.on_reveal(&reveal, callee_prekeys).unwrap();
    (reveal, ck, ek)
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    /// Opens `/events` as `who`, signed at `ts`.
    pub async fn open(base: &str, who: &Party, ts: u64) -> Self {
        let client = reqwest::Client::new();
        let mut b = client.get(format!("{base}/events"));
        for (k, v) in who.auth_headers("GET", "/events", ts, b"") {
            b = b.header(k, v);
        }
        let resp = b.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        Self { resp, buf: String::new() }
    }

    /// The next event (name, JSON data), skipping keep-alive comments. None when the stream ends.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(timeout, self.next_inner()).await.expect("timed out waiting for an SSE event")
    }

    async fn next_inner(&mut self) -> Option<(String, Value)> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = n.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if !data.is_empty() {
                    return Some((name, serde_json::from_str(&data).unwrap()));
                }
            }
            let chunk = self.resp.chunk().await.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Skips events until one named `name` arrives.
    pub async fn until(&mut self, name: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (n, v) = self.next(left).await.unwrap_or_else(|| panic!("stream ended before {name}"));
            if n == name {
                return v;
            }
        }
    }
}
