//! Adversarial tests of the real `qvoice` client (issue 12): against a hostile registry, the push-stream
//! parser's memory stays bounded and an OFFER delivered twice is handled once; against the real registry,
//! a second caller's call waits (instead of `busy`) and is offered after the first call; a key file other
//! users can read is reported and made owner-only. Each fails against the client before issue 12.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;
mod hostile_registry;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use client_common::{Registry, SHORT, User};
use hostile_registry::Hostile;
use qvoice_proto::{Caller, CallerParams, Candidate, Codec, IdentityKey, IdentitySecret, SignedPrekey, Username, b64};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_parser_memory_stays_bounded_against_a_hostile_registry() {
    const TOTAL: u64 = 64 << 20;
    let hostile = Hostile::start().await;
    let bob = User::init("bob", &hostile.url).await;
    let mut listen = bob.spawn(&["listen", "--input", "silence", "--output", "null"]);
    tokio::time::timeout(SHORT, hostile.stream_opened.notified()).await.expect("client never opened /events");
    let pid = listen.pid();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let base = rss_kib(pid);
    // The finding: `data: x` lines with no blank line grew the client from 1.7 to 61 MB in 18 s.
    let chunk = b"data: x\n".repeat(8 * 1024);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut peak = base;
    let mut sent = 0u64;
    while sent < TOTAL && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, hostile.events.send(chunk.clone())).await.is_err() {
            break;
        }
        sent += chunk.len() as u64;
        if sent.is_multiple_of(1 << 20) {
            peak = peak.max(rss_kib(pid));
        }
    }
    let streamed = hostile.streamed.load(Ordering::Relaxed);
    peak = peak.max(rss_kib(pid));
    eprintln!("streamed {} MiB; client RSS {base} KiB -> peak {peak} KiB", streamed >> 20);
    assert!(streamed >= TOTAL - (1 << 20), "the client stopped reading: {} MiB in 40 s", streamed >> 20);
    assert!(peak - base < 16 * 1024, "client memory grew from {base} KiB to {peak} KiB");
    // Still alive and parsing: a well-formed event after the junk is acted on.
    hostile
        .events
        .send(b"\n\nevent: ready\ndata: {\"type\":\"ready\",\"username\":\"bob\",\"online\":[]}\n\n".to_vec())
        .await
        .unwrap();
    listen.wait_for("connection", SHORT, |v| v["connected"] == true).await;
}

/// A genuine OFFER from `mallory` to the user who registered at `hostile`.
fn offer_to(hostile: &Hostile, mallory: &IdentitySecret, callee: &str) -> (String, String) {
    let reg = hostile.body_of("/register").unwrap();
    let key = IdentityKey::from_bytes(&b64::decode(reg["identity_key"].as_str().unwrap()).unwrap()).unwrap();
    let prekey = SignedPrekey::parse(&b64::decode(reg["prekey"].as_str().unwrap()).unwrap()).unwrap();
    let params = CallerParams {
        caller: Username::parse("mallory").unwrap(),
        callee: Username::parse(callee).unwrap(),
        codecs: vec![Codec::Opus.into()],
        frame_ms: 20,
        candidates: vec![Candidate::host("127.0.0.1:9".parse().unwrap())],
        obfuscation: false,
    };
    let (_c, offer) = Caller::start(&mut rand::rng(), now_ms(), mallory, params, &key, &prekey).unwrap();
    (offer.call_id.to_hex(), b64::encode(offer.to_bytes()))
}

fn incoming_event(call_id: &str, offer: &str) -> Vec<u8> {
    let data = serde_json::json!({
        "type": "incoming_call", "call_id": call_id, "caller": "mallory", "offer": offer,
        "created_ms": now_ms(), "expires_ms": now_ms() + 45_000,
    });
    format!("event: incoming_call\ndata: {data}\n\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_delivered_again_is_handled_once() {
    let hostile = Hostile::start().await;
    let bob = User::init("bob", &hostile.url).await;
    let mut listen = bob.spawn(&["listen", "--input", "silence", "--output", "null"]);
    tokio::time::timeout(SHORT, hostile.stream_opened.notified()).await.unwrap();
    hostile
        .events
        .send(b"event: ready\ndata: {\"type\":\"ready\",\"username\":\"bob\",\"online\":[]}\n\n".to_vec())
        .await
        .unwrap();
    listen.wait_for("connection", SHORT, |v| v["connected"] == true).await;
    let mallory = IdentitySecret::generate(&mut rand::rng());
    let (id, offer) = offer_to(&hostile, &mallory, "bob");
    hostile.events.send(incoming_event(&id, &offer)).await.unwrap();
    listen.wait_for("incoming_call", SHORT, |v| v["call_id"] == id.as_str()).await;
    listen.send_line("reject").await;
    listen.wait_for("ended", SHORT, |v| v["call_id"] == id.as_str()).await;
    assert_eq!(hostile.count("POST", "/call/reject"), 1);
    // The registry delivers the same OFFER again (or a replay of it), then a new call.
    hostile.events.send(incoming_event(&id, &offer)).await.unwrap();
    let (id2, offer2) = offer_to(&hostile, &mallory, "bob");
    hostile.events.send(incoming_event(&id2, &offer2)).await.unwrap();
    listen.wait_for("incoming_call", SHORT, |v| v["call_id"] == id2.as_str()).await;
    let rung = listen.seen.iter().filter(|v| v["event"] == "incoming_call" && v["call_id"] == id.as_str()).count();
    assert_eq!(rung, 1, "the same call id rang twice");
    assert_eq!(hostile.count("POST", "/call/reject"), 1, "the duplicate was not answered either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_waits_and_is_offered_when_the_first_ends() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let [alice, bob, mallory] = [
        User::init("alice", &reg.url()).await,
        User::init("bob", &reg.url()).await,
        User::init("mallory", &reg.url()).await,
    ];
    let mut b = bob.listen(&[]).await;
    let mut m = mallory.call("bob", &[]);
    b.wait_for("incoming_call", SHORT, |v| v["from"] == "mallory").await;
    // Alice's call rings too (before: 409 busy, and alice learned bob was on a call).
    let mut a = alice.call("bob", &[]);
    a.wait("ringing", SHORT).await;
    b.wait_for("call_waiting", SHORT, |v| v["from"] == "alice").await;
    // Bob turns mallory down; alice's waiting call is offered, and bob takes it.
    b.send_line("reject").await;
    m.wait("ended", SHORT).await;
    let inc = b.wait_for("incoming_call", SHORT, |v| v["from"] == "alice").await;
    b.send_line(&format!("accept {}", inc["call_id"].as_str().unwrap())).await;
    a.wait("active", SHORT).await;
    b.wait("active", SHORT).await;
    assert_eq!(m.end_reason().as_deref(), Some("rejected"));
}

#[tokio::test]
async fn a_key_file_other_users_can_read_is_reported_and_made_private() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let keys = alice.home().join("keys.json");
    let keys = if keys.exists() {
        keys
    } else {
        walk(alice.home()).into_iter().find(|p| p.file_name().is_some_and(|n| n == "keys.json")).unwrap()
    };
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tokio::process::Command::new(client_common::BIN)
        .arg("--home")
        .arg(alice.home())
        .arg("whoami")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("accessible to other users (mode 644)"), "no warning: {stderr}");
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
