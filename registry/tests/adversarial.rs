//! Adversarial tests of the real `qvoice-registry` binary on 127.0.0.1, one per finding of issue 12:
//! junk requests cannot lock out a signed user; idle, header-less, trickled and slow-body connections are
//! closed within the configured timeouts and shutdown does not wait for them; the server answers with
//! twice its open-file limit of idle clients connecting; a stranger's ringing makes nobody busy; a
//! captured signed request is refused after a restart (graceful or kill -9); bidi display names and
//! dot/dash usernames are refused; one user holds at most the stream cap; unsigned reads are limited
//! per address; `/metrics` is not public. Every test here fails against the registry before issue 12.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../benches/support/proc.rs"]
mod proc;

use std::process::Child;
use std::time::{Duration, Instant};

use common::Party;
use proc::{now_ms, start_with};
use qvoice_proto::b64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The registry process; killed when the test ends, also on failure.
struct Reg {
    child: Option<Child>,
    base: String,
}

impl Reg {
    fn start(db: &std::path::Path, args: &[&str]) -> Self {
        let (child, base) = start_with(db, args, &[("QVOICE_REGISTRY_METRICS_TOKEN", "t0ken")], None);
        Self { child: Some(child), base }
    }

    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// SIGTERM; returns how long the process took to exit and whether it exited 0.
    fn term(&mut self) -> (Duration, bool) {
        let mut child = self.child.take().unwrap();
        let t = Instant::now();
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let st = child.wait().unwrap();
        (t.elapsed(), st.success())
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    async fn metrics(&self) -> String {
        let c = reqwest::Client::new();
        c.get(format!("{}/metrics", self.base)).bearer_auth("t0ken").send().await.unwrap().text().await.unwrap()
    }
}

impl Drop for Reg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A signed request built at `ts`, sendable (and re-sendable) as is.
#[derive(Clone)]
struct Captured {
    method: reqwest::Method,
    pq: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Captured {
    fn new(who: &Party, method: &str, pq: &str, body: &Value, ts: u64) -> Self {
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
        let headers = who.auth_headers(method, pq, ts, &body);
        Self { method: reqwest::Method::from_bytes(method.as_bytes()).unwrap(), pq: pq.to_owned(), headers, body }
    }

    async fn send(&self, base: &str) -> (u16, Value) {
        let mut b = reqwest::Client::new().request(self.method.clone(), format!("{base}{}", self.pq));
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let r = b.body(self.body.clone()).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Monotonic signing timestamps on the real clock (never reuse one: Ed25519 is deterministic).
fn ts() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    let prev = LAST.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
    if prev >= now { LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 } else { now }
}

async fn signed(base: &str, who: &Party, method: &str, pq: &str, body: Value) -> (u16, Value) {
    Captured::new(who, method, pq, &body, ts()).send(base).await
}

async fn register(base: &str, p: &Party) -> (u16, Value) {
    signed(base, p, "POST", "/register", p.register_body()).await
}

fn offer_body(caller: &Party, callee: &Party) -> (Value, String) {
    let (_c, offer) = common::offer_at(now_ms(), caller, callee);
    (json!({ "offer": b64::encode(offer.to_bytes()) }), offer.call_id.to_hex())
}

#[tokio::test]
async fn junk_cannot_lock_out_a_signed_user() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    // 200 well-formed but unverifiable requests from this address, some claiming alice's name: the
    // finding was that 35 of these made every client on the address get 429.
    let mallory = Party::new("alice");
    let client = reqwest::Client::new();
    let mut last = 0;
    for i in 0..200 {
        let (pq, body) = if i % 2 == 0 {
            ("/register", mallory.register_body())
        } else {
            ("/call/initiate", json!({"offer": "AAAA"}))
        };
        let body = serde_json::to_vec(&body).unwrap();
        let mut b = client.post(format!("{}{pq}", reg.base));
        for (k, v) in mallory.auth_headers("POST", pq, ts(), b"not the body") {
            b = b.header(k, v);
        }
        let r = b.body(body).send().await.unwrap();
        last = r.status().as_u16();
        assert!(matches!(last, 401 | 429), "junk got {last}");
    }
    assert_eq!(last, 429, "the address's failed-authentication budget is spent");
    // Real users on the same address are unaffected: first registrations, updates, calls.
    assert_eq!(register(&reg.base, &alice).await.0, 201);
    assert_eq!(register(&reg.base, &bob).await.0, 201);
    assert_eq!(register(&reg.base, &alice).await.0, 200);
    let (body, _) = offer_body(&alice, &bob);
    let (st, v) = signed(&reg.base, &alice, "POST", "/call/initiate", body).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(signed(&reg.base, &bob, "GET", "/users", Value::Null).await.0, 200);
}

/// Connects and returns how long until the server closed the connection (read returned 0 or failed),
/// after running `f` on it; panics after `max`.
async fn time_to_close(addr: &str, max: Duration, f: impl AsyncFnOnce(&mut TcpStream)) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    f(&mut s).await;
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(max, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {max:?}");
    t.elapsed()
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_within_the_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Reg::start(
        &dir.path().join("r.sqlite3"),
        &["--header-timeout-secs", "1", "--keep-alive-secs", "2", "--request-timeout-secs", "2"],
    );
    let addr = reg.addr();
    let max = Duration::from_secs(6);
    let silent = time_to_close(&addr, max, async |_s| {});
    let trickle = time_to_close(&addr, max, async |s| {
        // One byte every 150 ms: the head would take 4 s; it must be cut at 1 s.
        for b in b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let kept_alive = time_to_close(&addr, max, async |s| {
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    });
    let slow_body = async {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let t = Instant::now();
        s.write_all(
            b"POST /register HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\ncontent-type: application/json\r\n",
        )
        .await
        .unwrap();
        // Well-formed auth headers: the body must be read (slowly) before the signature can be checked.
        for (k, v) in Party::new("alice").auth_headers("POST", "/register", ts(), b"{}") {
            s.write_all(format!("{k}: {v}\r\n").as_bytes()).await.unwrap();
        }
        s.write_all(b"\r\n{").await.unwrap();
        let mut resp = Vec::new();
        let read = tokio::time::timeout(max, async {
            let mut buf = [0u8; 1024];
            loop {
                let _ = s.write_all(b" ").await;
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => resp.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
        .await;
        assert!(read.is_ok(), "slow upload still open after {max:?}");
        (t.elapsed(), String::from_utf8_lossy(&resp).into_owned())
    };
    let (silent, trickle, kept_alive, (slow, slow_resp)) = tokio::join!(silent, trickle, kept_alive, slow_body);
    eprintln!(
        "closed after: silent {silent:?}, trickled head {trickle:?}, kept-alive idle {kept_alive:?}, slow body {slow:?}"
    );
    let within = |d: Duration, lo: f64, hi: f64| d.as_secs_f64() >= lo && d.as_secs_f64() <= hi;
    assert!(within(silent, 0.9, 2.5), "silent connection closed after {silent:?} (header timeout 1 s)");
    assert!(within(trickle, 0.9, 2.5), "trickled head closed after {trickle:?} (header timeout 1 s)");
    assert!(within(kept_alive, 1.9, 3.5), "idle kept-alive connection closed after {kept_alive:?} (2 s)");
    assert!(within(slow, 1.9, 3.5), "slow upload closed after {slow:?} (request timeout 2 s)");
    assert!(slow_resp.starts_with("HTTP/1.1 408"), "{slow_resp}");
    assert!(slow_resp.contains("request_timeout"), "{slow_resp}");
    let m = reg.metrics().await;
    assert!(m.contains("qvoice_registry_connections_closed_total{reason=\"header_timeout\"} 2"), "{m}");

    // Shutdown does not wait for a client stuck in the middle of its request head.
    let mut stuck = TcpStream::connect(&addr).await.unwrap();
    stuck.write_all(b"GET /health HTTP/1.1\r\nhost:").await.unwrap();
    let _idle = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (took, ok) = reg.term();
    assert!(ok, "registry did not exit cleanly on SIGTERM");
    eprintln!("SIGTERM with a half-sent head connected: exited after {took:?}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?} with a partial-header client connected");
}

#[tokio::test]
async fn responsive_with_twice_the_fd_limit_of_idle_clients() {
    const LIMIT: u32 = 128;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) =
        start_with(&dir.path().join("r.sqlite3"), &[], &[("QVOICE_REGISTRY_METRICS_TOKEN", "t0ken")], Some(LIMIT));
    let reg = Reg { child: Some(child), base };
    let addr = reg.addr();
    // Idle clients: connect and say nothing (the header timeout is the default 10 s, longer than this test).
    let mut idle = Vec::new();
    for _ in 0..2 * LIMIT {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 2 * LIMIT as usize, "every idle client could connect");
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(3), client.get(format!("{}/health", reg.base)).send()).await;
        let status = r.unwrap_or_else(|_| panic!("/health #{i} timed out with {} idle clients", idle.len())).unwrap();
        assert_eq!(status.status(), 200, "/health #{i}");
        assert!(t.elapsed() < Duration::from_secs(1), "/health #{i} took {:?}", t.elapsed());
        worst = worst.max(t.elapsed());
        // More idle clients keep arriving meanwhile.
        if let Ok(s) = TcpStream::connect(&addr).await {
            idle.push(s);
        }
    }
    eprintln!("{} idle clients connected; slowest of 20 /health: {worst:?}", idle.len());
    let m = reg.metrics().await;
    let evicted: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("qvoice_registry_connections_closed_total{reason=\"evicted\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(evicted >= u64::from(LIMIT), "idle connections made room: {m}");
    let open: usize = m.lines().find_map(|l| l.strip_prefix("qvoice_registry_connections ")).unwrap().parse().unwrap();
    assert!(open <= LIMIT as usize - qvoice_registry::conn::FD_RESERVE, "open connections {open} within the cap");
}

#[tokio::test]
async fn a_strangers_ringing_does_not_make_the_callee_busy() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    let [alice, bob, carol, mallory] = ["alice", "bob", "carol", "mallory"].map(Party::new);
    for p in [&alice, &bob, &carol, &mallory] {
        assert_eq!(register(&reg.base, p).await.0, 201);
    }
    // Mallory rings bob (bob is not even online).
    let (body, m_call) = offer_body(&mallory, &bob);
    assert_eq!(signed(&reg.base, &mallory, "POST", "/call/initiate", body).await.0, 201);
    // Alice can still call bob: it rings too (call waiting), and is not answered `busy`.
    let (body, a_call) = offer_body(&alice, &bob);
    let (st, v) = signed(&reg.base, &alice, "POST", "/call/initiate", body).await;
    assert_eq!((st, v["state"].as_str()), (201, Some("ringing")), "{v}");
    // Bob sees both ringing calls and can still place his own.
    let (_, p) = signed(&reg.base, &bob, "GET", "/call/pending/bob", Value::Null).await;
    let ids: Vec<&str> = p["calls"].as_array().unwrap().iter().map(|c| c["call_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&m_call.as_str()) && ids.contains(&a_call.as_str()), "{p}");
    let (body, _) = offer_body(&bob, &carol);
    let (st, v) = signed(&reg.base, &bob, "POST", "/call/initiate", body).await;
    assert_eq!(st, 201, "bob can dial out while calls ring for him: {v}");
    // Mallory cannot re-arm rings at bob 30 times a minute: 6 per minute per caller and callee.
    let mut statuses = Vec::new();
    let mut call = m_call;
    for _ in 0..7 {
        signed(&reg.base, &mallory, "POST", "/call/cancel", json!({ "call_id": call })).await;
        let (body, id) = offer_body(&mallory, &bob);
        statuses.push(signed(&reg.base, &mallory, "POST", "/call/initiate", body).await.0);
        call = id;
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429, 429], "per-pair ring limit");
}

#[tokio::test]
async fn a_replayed_signed_request_is_refused_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.sqlite3");
    let mut reg = Reg::start(&db, &[]);
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    let mut first = alice.register_body();
    first["display_name"] = json!("Alice one");
    let r1 = Captured::new(&alice, "POST", "/register", &first, ts());
    assert_eq!(r1.send(&reg.base).await.0, 201);
    assert_eq!(register(&reg.base, &bob).await.0, 201);
    let mut second = alice.register_body();
    second["display_name"] = json!("Alice two");
    assert_eq!(signed(&reg.base, &alice, "POST", "/register", second).await.0, 200);
    let (body, call) = offer_body(&alice, &bob);
    let initiate = Captured::new(&alice, "POST", "/call/initiate", &body, ts());
    assert_eq!(initiate.send(&reg.base).await.0, 201);
    assert_eq!(signed(&reg.base, &alice, "POST", "/call/cancel", json!({ "call_id": call })).await.0, 200);
    // While running, the replay cache refuses them.
    assert_eq!(r1.send(&reg.base).await.0, 401);

    // Graceful restart: the captured registration does not roll the display name back.
    let (_, ok) = reg.term();
    assert!(ok);
    reg = Reg::start(&db, &[]);
    let (st, v) = r1.send(&reg.base).await;
    assert_eq!((st, v["error"].as_str()), (401, Some("replayed")), "{v}");
    let f: Value = reqwest::get(format!("{}/fetch/alice", reg.base)).await.unwrap().json().await.unwrap();
    assert_eq!(f["display_name"], "Alice two");

    // Crash (kill -9) right after an acknowledged initiate: the capture does not ring bob again.
    let (body, _) = offer_body(&alice, &bob);
    let initiate2 = Captured::new(&alice, "POST", "/call/initiate", &body, ts());
    assert_eq!(initiate2.send(&reg.base).await.0, 201);
    reg.kill9();
    reg = Reg::start(&db, &[]);
    for captured in [&initiate, &initiate2] {
        let (st, v) = captured.send(&reg.base).await;
        assert_eq!((st, v["error"].as_str()), (401, Some("replayed")), "{v}");
    }
    let (_, p) = signed(&reg.base, &bob, "GET", "/call/pending/bob", Value::Null).await;
    assert!(p["calls"].as_array().unwrap().is_empty(), "{p}");
    // Fresh requests work.
    assert_eq!(signed(&reg.base, &alice, "GET", "/users", Value::Null).await.0, 200);
}

#[tokio::test]
async fn bidi_display_names_and_dot_usernames_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    let alice = Party::new("alice");
    for name in ["Bob\u{202E}gnp.exe", "a\u{2067}b", "zero\u{200B}width", "\u{3164}", " Bob"] {
        let mut body = alice.register_body();
        body["display_name"] = json!(name);
        let (st, v) = signed(&reg.base, &alice, "POST", "/register", body).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("invalid_field")), "{name:?}: {v}");
    }
    for name in [".", "..", "-rf", "_x"] {
        let p = Party::new(name);
        let (st, v) = register(&reg.base, &p).await;
        assert_eq!((st, v["error"].as_str()), (400, Some("invalid_username")), "{name:?}: {v}");
    }
    let mut body = alice.register_body();
    body["display_name"] = json!("Алиса Ω");
    assert_eq!(signed(&reg.base, &alice, "POST", "/register", body).await.0, 201);
}

#[tokio::test]
async fn one_user_holds_at_most_the_stream_cap() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    let alice = Party::new("alice");
    assert_eq!(register(&reg.base, &alice).await.0, 201);
    let mut streams = Vec::new();
    for _ in 0..6 {
        streams.push(common::SseReader::open(&reg.base, &alice, ts()).await);
        streams.last_mut().unwrap().until("ready", Duration::from_secs(5)).await;
    }
    // The two oldest ended; the newest four are open.
    for s in &mut streams[..2] {
        assert_eq!(s.next(Duration::from_secs(5)).await.map(|e| e.0), None, "an old stream must end");
    }
    let m = reg.metrics().await;
    assert!(m.contains("qvoice_registry_event_streams 4\n"), "{m}");
    assert!(m.contains("qvoice_registry_event_streams_replaced_total 2\n"), "{m}");
}

#[tokio::test]
async fn unsigned_reads_are_limited_per_address_and_metrics_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    let alice = Party::new("alice");
    assert_eq!(register(&reg.base, &alice).await.0, 201);
    let client = reqwest::Client::new();
    let mut limited = 0;
    for i in 0..100 {
        let st = client.get(format!("{}/fetch/user{i}", reg.base)).send().await.unwrap().status().as_u16();
        assert!(matches!(st, 404 | 429), "{st}");
        limited += usize::from(st == 429);
    }
    assert!(limited >= 30, "enumeration is limited: {limited} of 100 refused");
    // A signed fetch is charged to the user, not to the address.
    let (st, v) = signed(&reg.base, &alice, "GET", "/fetch/alice", Value::Null).await;
    assert_eq!(st, 200, "{v}");
    // Call counts are not for everyone.
    assert_eq!(client.get(format!("{}/metrics", reg.base)).send().await.unwrap().status(), 404);
    assert!(reg.metrics().await.contains("qvoice_registry_calls{state=\"ringing\"}"));
}

/// Found by the `registry_request` fuzz target: a path segment that is not UTF-8 was answered by axum's
/// plain-text rejection instead of the registry's JSON error.
#[tokio::test]
async fn malformed_paths_get_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Reg::start(&dir.path().join("r.sqlite3"), &[]);
    for pq in ["/call/status/%C3", "/fetch/%FF", "/call/pending/%C3%28"] {
        let r = reqwest::get(format!("{}{pq}", reg.base)).await.unwrap();
        assert_eq!(r.status(), 400, "{pq}");
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{pq}: not JSON: {e}"));
        assert!(v["error"].is_string() && v["message"].as_str().is_some_and(|m| !m.is_empty()), "{pq}: {v}");
    }
}
