//! Fixtures shared by the fuzz targets: a real registry state (`AppState` on a SQLite file in /dev/shm,
//! a manual clock) with two registered users and one genuine handshake between them, built from a seeded
//! RNG; helpers to sign requests as those users and to substitute genuine values into fuzzed JSON; and the
//! input cursor.
//!
//! Harness code, like test code, may `expect`: a failure here is a broken fixture, not a finding.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use qvoice_proto::handshake::{Callee, CalleeParams, Caller, CallerParams};
use qvoice_proto::{Candidate, Codec, IdentitySecret, PrekeySecret, Username, auth, b64};
use qvoice_registry::limits::RateLimits;
use qvoice_registry::{AppState, Config, ManualClock};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tower::ServiceExt as _;

/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;
/// The origin the fixture registry serves and every fixture request is signed for.
pub const ORIGIN: &str = "http://registry.fuzz:80";
/// Requests served by one fixture before it is rebuilt (keeps the replay cache, calls and database small,
/// and the genuine OFFER inside the 2-minute skew window of the clock, which moves 1 ms per request).
pub const REBUILD_EVERY: u64 = 20_000;

/// One registry with `alice` and `bob` registered.
pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub state: AppState,
    pub app: Router,
    pub clock: ManualClock,
    pub alice: IdentitySecret,
    pub bob: IdentitySecret,
    /// Values a fuzzed body may refer to with `$O`, `$A`, `$R`, `$K`, `$P`, `$C`: bob's genuine OFFER to
    /// alice, alice's ANSWER, bob's REVEAL, alice's identity key and signed prekey, the call id.
    pub genuine: Vec<(&'static [u8], Vec<u8>)>,
    pub served: u64,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop (no tempfile crate needed).
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn name(s: &str) -> Username {
    Username::parse(s).expect("fixture username")
}

impl Fixture {
    pub fn new(seed: u64) -> Self {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = std::path::PathBuf::from(format!("{base}/qvoice-fuzz-{}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let clock = ManualClock::new(T0);
        let mut cfg = Config::new(dir.join("registry.sqlite3"));
        cfg.clock = Arc::new(clock.clone());
        cfg.rate_limits = RateLimits::all(u32::MAX);
        cfg.public_origins = vec![ORIGIN.to_owned()];
        // A long-poll would hold the fuzzer for seconds.
        cfg.long_poll_max = std::time::Duration::ZERO;
        let state = AppState::new(cfg).expect("fixture state");
        let app = qvoice_registry::router(state.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let alice = IdentitySecret::generate(&mut rng);
        let bob = IdentitySecret::generate(&mut rng);
        let alice_pk = PrekeySecret::generate(&mut rng, 1);
        let bob_pk = PrekeySecret::generate(&mut rng, 1);
        let cand = |s: &str| Candidate::host(s.parse().expect("fixture candidate"));
        let (caller, offer) = Caller::start(
            &mut rng,
            T0,
            &bob,
            CallerParams {
                caller: name("bob"),
                callee: name("alice"),
                codecs: vec![Codec::Opus.into(), Codec::Pcm16.into()],
                frame_ms: 20,
                candidates: vec![cand("192.0.2.1:4000")],
                obfuscation: false,
            },
            &alice.public(),
            &alice_pk.sign(&alice, T0 + qvoice_proto::PREKEY_LIFETIME_MS),
        )
        .expect("fixture offer");
        let (_callee, answer) = Callee::on_offer(
            &mut rng,
            T0,
            &alice,
            &bob.public(),
            &offer,
            CalleeParams { callee: name("alice"), codecs: vec![Codec::Opus.into()], candidates: vec![], obfuscation: false },
        )
        .expect("fixture answer");
        let (reveal, _) = caller.on_answer(&mut rng, &answer).expect("fixture reveal");
        let genuine: Vec<(&'static [u8], Vec<u8>)> = vec![
            (b"$O", b64::encode(offer.to_bytes()).into_bytes()),
            (b"$A", b64::encode(answer.to_bytes()).into_bytes()),
            (b"$R", b64::encode(reveal.to_bytes()).into_bytes()),
            (b"$K", b64::encode(alice.public().as_bytes()).into_bytes()),
            (b"$P", b64::encode(&alice_pk.sign(&alice, T0 + qvoice_proto::PREKEY_LIFETIME_MS).to_bytes()).into_bytes()),
            (b"$C", offer.call_id.to_hex().into_bytes()),
        ];
        let mut fx = Self { rt, state, app, clock, alice, bob, genuine, served: 0, _dir: tempfile_dir::Dir(dir) };
        for (who, pk) in [("alice", &alice_pk), ("bob", &bob_pk)] {
            let id = if who == "alice" { &fx.alice } else { &fx.bob };
            let body = format!(
                r#"{{"username":"{who}","identity_key":"{}","prekey":"{}"}}"#,
                b64::encode(id.public().as_bytes()),
                b64::encode(&pk.sign(id, T0 + qvoice_proto::PREKEY_LIFETIME_MS).to_bytes())
            );
            let (status, _) = fx.send("POST", "/register", Signer::User(who), body.into_bytes(), Vec::new());
            assert_eq!(status, 201, "fixture registration of {who}");
        }
        fx
    }

    /// Replaces `$O`-style markers in `body` with the genuine values.
    pub fn substitute(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len());
        let mut i = 0;
        'outer: while i < body.len() {
            for (marker, value) in &self.genuine {
                if body[i..].starts_with(marker) {
                    out.extend_from_slice(value);
                    i += marker.len();
                    continue 'outer;
                }
            }
            out.push(body[i]);
            i += 1;
        }
        out
    }

    /// Sends one request through the router (no socket) and returns status and body. The clock moves 1 ms.
    pub fn send(
        &mut self,
        method: &str,
        pq: &str,
        signer: Signer<'_>,
        body: Vec<u8>,
        extra: Vec<(String, Vec<u8>)>,
    ) -> (u16, Vec<u8>) {
        self.served += 1;
        self.clock.advance(std::time::Duration::from_millis(1));
        let ts = qvoice_registry::clock::Clock::now_ms(&self.clock);
        let mut b = Request::builder().method(method).uri(pq);
        if let Signer::User(who) = signer {
            let id = if who == "alice" { &self.alice } else { &self.bob };
            let sig = auth::sign_request(id, ORIGIN, method, pq, who, ts, &body);
            b = b
                .header(auth::HEADER_USER, who)
                .header(auth::HEADER_ORIGIN, ORIGIN)
                .header(auth::HEADER_TIMESTAMP, ts.to_string())
                .header(auth::HEADER_SIGNATURE, b64::encode(&sig));
        }
        for (k, v) in extra {
            if let (Ok(k), Ok(v)) =
                (axum::http::HeaderName::from_bytes(k.as_bytes()), axum::http::HeaderValue::from_bytes(&v))
            {
                b = b.header(k, v);
            }
        }
        let Ok(req) = b.body(Body::from(body)) else { return (0, Vec::new()) };
        let app = self.app.clone();
        self.rt.block_on(async move {
            let resp = app.oneshot(req).await.expect("router is infallible");
            let status = resp.status().as_u16();
            // `/events` answers with an endless stream: read only what is there now.
            let bytes = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                axum::body::to_bytes(resp.into_body(), 1 << 20),
            )
            .await;
            (status, bytes.ok().and_then(Result::ok).map(|b| b.to_vec()).unwrap_or_default())
        })
    }
}

/// Who signs a request.
#[derive(Clone, Copy, Debug)]
pub enum Signer<'a> {
    /// Unsigned (or only the fuzzer's own headers).
    None,
    /// Correctly signed by the fixture user `alice` or `bob`.
    User(&'a str),
}

/// Checks the registry's error contract on a response: never a 5xx, and every 4xx carries
/// `{"error": code, "message": text}`.
pub fn check_response(status: u16, body: &[u8], what: &str) {
    assert!(status < 500, "{what}: server error {status}: {}", String::from_utf8_lossy(body));
    if status >= 400 {
        let v: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| panic!("{what}: {status} body is not JSON: {}", String::from_utf8_lossy(body)));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: no error code: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message: {v}");
    }
}

/// Reads fuzz input as a little command stream; runs dry as zeros so every input is usable.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Bytes up to the next 0xFF (consumed) or the end.
    pub fn field(&mut self) -> &'a [u8] {
        let end = self.data.iter().position(|&b| b == 0xFF).unwrap_or(self.data.len());
        let (f, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or(&[]);
        f
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
