//! Protocol behaviours between real `qvoice` processes and hand-built peers (to the binaries, another
//! implementation): an OFFER the callee cannot run is refused before any ANSWER, the caller checks the
//! ANSWER's choices, polling-only callees are reachable, an expired prekey is refused by the caller, and
//! a normal hang-up is posted once and never answered `409 wrong_state` (docs/PROTOCOL.md and
//! docs/REGISTRY.md say the rules; each test names its issue).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::sync::Arc;
use std::time::Duration;

use client_common::{LONG, Registry, SHORT, User};
use qvoice::session::client::{EndRequest, RegistryClient};
use qvoice::session::store::{ContactBook, Keystore};
use qvoice::session::{SessionCommand, SessionEvent, SessionOptions};
use qvoice_proto::{
    Caller, CallerParams, Codec, CodecOffer, IdentitySecret, Offer, PREKEY_LIFETIME_MS, PrekeySecret, Username, b64,
};
use qvoice_wire::{CallState, EndKind, StatusResponse};
use tokio::sync::mpsc;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A peer driven by the test through the registry API, as another implementation would be.
struct RawPeer {
    name: Username,
    id: Arc<IdentitySecret>,
    prekey: PrekeySecret,
    client: RegistryClient,
}

impl RawPeer {
    /// Registers `name` with a prekey that expires at `expires_ms`.
    async fn register(url: &str, name: &str, expires_ms: u64) -> Self {
        let id = Arc::new(IdentitySecret::generate(&mut rand::rng()));
        let prekey = PrekeySecret::generate(&mut rand::rng(), 1);
        let name = Username::parse(name).unwrap();
        let client = RegistryClient::new(url, name.clone(), id.clone()).unwrap();
        client.register(&prekey.sign(&id, expires_ms), None, None).await.unwrap();
        Self { name, id, prekey, client }
    }

    /// Waits (long-polling, never opening `/events`) for the next call ringing for us; returns its id and
    /// OFFER.
    async fn next_call(&self) -> (String, Offer) {
        let deadline = tokio::time::Instant::now() + SHORT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no call rang for {}", self.name);
            if let Some(c) = self.client.pending(2).await.unwrap().calls.into_iter().next() {
                return (c.call_id, Offer::parse(&b64::decode(&c.offer).unwrap()).unwrap());
            }
        }
    }

    /// Polls `/call/status` until the call leaves `ringing`/`accepted`.
    async fn until_ended(&self, call_id: &str) -> StatusResponse {
        let deadline = tokio::time::Instant::now() + SHORT;
        loop {
            let st = self.client.status(call_id).await.unwrap();
            if !matches!(st.state, CallState::Ringing | CallState::Accepted) {
                return st;
            }
            assert!(tokio::time::Instant::now() < deadline, "call still {:?}", st.state);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn detail(p: &client_common::Proc) -> String {
    let ended = p.seen.iter().rev().find(|v| v["event"] == "ended").unwrap();
    ended["reason"]["detail"].as_str().unwrap_or("").to_owned()
}

/// Issue 13: the callee answered an OFFER it could not run (PCM16 at 64 ms) and failed after the SAS with
/// exit 1. Now it refuses before answering, with a reason, and never rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_refuses_an_offer_it_cannot_run_before_answering() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let bob = User::init("bob", &reg.url()).await;
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let carol = RawPeer::register(&reg.url(), "carol", now_ms() + PREKEY_LIFETIME_MS).await;
    let bundle = carol.client.fetch(&Username::parse("bob").unwrap()).await.unwrap();
    let params = CallerParams {
        caller: carol.name.clone(),
        callee: bundle.username.clone(),
        codecs: vec![CodecOffer::new(Codec::Pcm16, &[64])],
        frame_ms: 64,
        candidates: vec![],
        obfuscation: false,
    };
    let (_caller, offer) =
        Caller::start(&mut rand::rng(), now_ms(), &carol.id, params, &bundle.identity_key, &bundle.prekey).unwrap();
    let id = offer.call_id.to_hex();
    carol.client.initiate(offer.to_bytes()).await.unwrap();
    let st = carol.until_ended(&id).await;
    assert_eq!((st.state, st.end_kind), (CallState::Rejected, Some(EndKind::Incompatible)));
    assert_eq!(st.answer, None, "refused before any ANSWER");
    assert_eq!(
        st.reason.as_deref(),
        Some("no common frame duration for pcm: offered 64 ms; the callee runs 10/20/40 ms"),
        "the reason the caller shows"
    );
    b.wait_for("ended", SHORT, |v| v["reason"]["kind"] == "incompatible").await;
    assert_eq!(b.exit_code(SHORT).await, 0, "`listen` exits 0 after a call that did not happen");
    for never in ["incoming_call", "sas_ready", "active"] {
        assert!(!b.seen.iter().any(|v| v["event"] == never), "the refused call must not {never}");
    }
}

/// Issue 13: a refusal reaches the caller's user with its reason and exit code 4. The callee here only
/// polls `/call/pending` (no event stream), so this is also a call to a polling-only callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_reports_a_refusal_with_exit_code_4() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = RawPeer::register(&reg.url(), "bob", now_ms() + PREKEY_LIFETIME_MS).await;
    let mut a = alice.call("bob", &[]);
    let (id, offer) = bob.next_call().await;
    let offered: Vec<Codec> = offer.codecs.iter().map(|c| c.codec).collect();
    assert_eq!(offered, vec![Codec::Opus, Codec::Pcm16]);
    assert_eq!(offer.codecs[1].durations.iter().collect::<Vec<_>>(), vec![10, 20, 40], "PCM16 as the engine runs it");
    let why = "no common codec: offered opus, pcm; the callee runs g722";
    bob.client.end(EndRequest::Reject, &id, Some(EndKind::Incompatible), Some(why)).await.unwrap();
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("incompatible"));
    assert_eq!(detail(&a), why);
}

/// Issue 13: the caller silently adopted an ANSWER's other frame duration. A duration it did not offer
/// for the chosen codec (PCM16 at 60 ms: defined by the protocol, not run by this engine) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_refuses_an_answer_with_a_frame_duration_it_did_not_offer() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = RawPeer::register(&reg.url(), "bob", now_ms() + PREKEY_LIFETIME_MS).await;
    let mut a = alice.call("bob", &["--codec", "pcm"]);
    let (id, offer) = bob.next_call().await;
    // The ANSWER as docs/PROTOCOL.md lays it out, built and signed by hand.
    let mut body = vec![2u8, 2];
    body.extend_from_slice(offer.call_id.as_bytes());
    body.extend_from_slice(&0u32.to_be_bytes()); // capabilities
    body.extend_from_slice(bob.id.public().as_bytes());
    body.extend_from_slice(&7u32.to_be_bytes()); // session id
    body.extend_from_slice(&[Codec::Pcm16.as_u8(), 60, 0]); // codec, frame_ms, no candidates
    let mut base_point = [0u8; 32];
    base_point[0] = 9;
    body.extend_from_slice(&base_point); // an ephemeral X25519 key
    body.extend_from_slice(&bob.prekey.public_bytes()); // an ML-KEM-768 encapsulation key
    let sig = bob.id.sign(&[b"qvoice/v1 answer sig".as_slice(), offer.to_bytes(), &body].concat());
    body.extend_from_slice(&sig);
    bob.client.accept(&id, &body).await.unwrap();
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("incompatible"));
    assert!(detail(&a).contains("frame duration that was not offered"), "{}", detail(&a));
    let st = bob.until_ended(&id).await;
    assert_eq!((st.state, st.end_kind), (CallState::Cancelled, Some(EndKind::Incompatible)));
    assert!(!a.seen.iter().any(|v| v["event"] == "sas_ready"), "no keys from a refused ANSWER");
}

/// Issue 13: the client refused to call anyone without an open event stream, though the registry rings
/// them. A callee whose client only polls answers, and the call runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_only_callee_is_reachable() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let home = tempfile::tempdir().unwrap();
    let ks = Keystore::create(home.path(), Username::parse("bob").unwrap(), now_ms(), false).unwrap();
    let mut opts = SessionOptions::new(reg.url(), ks, ContactBook::load(home.path()).unwrap());
    opts.input = qvoice::media::AudioIn::Silence;
    opts.output = qvoice::media::AudioOut::Null;
    opts.auto_answer = true;
    opts.poll_only = true;
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (ev_tx, mut events) = mpsc::channel(256);
    let bob = tokio::spawn(qvoice::session::run(opts, cmd_rx, ev_tx));
    let next = async |events: &mut mpsc::Receiver<SessionEvent>, pred: &dyn Fn(&SessionEvent) -> bool| loop {
        let ev = tokio::time::timeout(SHORT, events.recv()).await.expect("bob's session went quiet").unwrap();
        assert!(!matches!(ev, SessionEvent::Connection { connected: true, .. }), "bob must not open /events");
        if pred(&ev) {
            return ev;
        }
    };
    next(&mut events, &|e| matches!(e, SessionEvent::Registered { .. })).await;
    let mut a = alice.call("bob", &["--duration", "1"]);
    let a_sas = a.wait("sas_ready", SHORT).await["sas"].as_str().unwrap().to_owned();
    let SessionEvent::SasReady { sas, .. } = next(&mut events, &|e| matches!(e, SessionEvent::SasReady { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(sas, a_sas);
    a.wait("audio_flowing", SHORT).await;
    assert_eq!(a.exit_code(LONG).await, 0);
    assert_eq!(a.end_reason().as_deref(), Some("local_hangup"));
    let ended = next(&mut events, &|e| matches!(e, SessionEvent::Ended { .. })).await;
    assert!(matches!(ended, SessionEvent::Ended { reason: qvoice::session::EndReason::RemoteHangup, .. }), "{ended:?}");
    cmd_tx.send(SessionCommand::Shutdown).await.unwrap();
    bob.await.unwrap().unwrap();
}

/// Issue 12: a registry kept serving a prekey after its owner rotated it away, and the call failed as a
/// security failure. Prekeys now expire; the caller refuses an expired one before sending an OFFER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_prekey_is_refused_by_the_caller() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let expires = now_ms() + 400;
    let _bob = RawPeer::register(&reg.url(), "bob", expires).await;
    // The registry accepted it while valid and keeps serving it; wait until it has expired.
    tokio::time::sleep(Duration::from_millis(expires.saturating_sub(now_ms()) + 50)).await;
    let mut a = alice.call("bob", &[]);
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("prekey_expired"));
    assert!(detail(&a).contains("must run qvoice once"), "{}", detail(&a));
    assert!(!a.seen.iter().any(|v| v["event"] == "dialing"), "no OFFER is sent against an expired prekey");
}

/// `(200, 409)` counts of `POST /call/hangup` at the registry.
fn hangups(reg: &Registry) -> (u64, u64) {
    let text = qvoice_registry::metrics::render(&reg.running.as_ref().unwrap().state);
    let count = |status: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("qvoice_registry_requests_total{{route=\"/call/hangup\",status=\"{status}\"}}"))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    (count("200"), count("409"))
}

/// Issue 13: both sides posted `/call/hangup` and the second got `409 wrong_state`. Only the party that
/// ends the call posts it; the other learns from BYE (or `call_ended`) and posts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_hang_up_is_posted_once_by_the_party_that_hangs_up() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    // The caller hangs up.
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--duration", "0.5"]);
    assert_eq!(a.exit_code(LONG).await, 0);
    assert_eq!(b.exit_code(LONG).await, 0);
    assert_eq!(b.end_reason().as_deref(), Some("remote_hangup"));
    assert_eq!(hangups(&reg), (1, 0));
    // The callee hangs up.
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &[]);
    b.wait("audio_flowing", SHORT).await;
    b.send_line("hangup").await;
    assert_eq!(b.exit_code(LONG).await, 0);
    assert_eq!(a.exit_code(LONG).await, 0);
    assert_eq!(a.end_reason().as_deref(), Some("remote_hangup"));
    assert_eq!(hangups(&reg), (2, 0));
}
