//! End-to-end calls between real `qvoice` processes through a real registry on 127.0.0.1, with speech
//! WAVs both ways over real UDP: the seed's success indicators, and every way a call can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;
#[path = "media_common/mod.rs"]
mod media_common;

use std::time::Duration;

use client_common::{LONG, Registry, SHORT, User, alice_and_bob};
use media_common::{Input, chirp, make_input, ncc, read_wav};

/// Finds the first chirp of `input` in `out` (anywhere), then aligns each half second of speech on its
/// own within ±150 ms of the chirp's lag (the jitter buffer may legitimately add or drop a frame between
/// them) and averages the speech correlations. Returns (chirp lag in samples, chirp corr, speech corr).
fn align_and_correlate(input: &Input, out: &[f64]) -> (i64, f64, f64) {
    let c = chirp();
    let (mut best_pos, mut best) = (0usize, f64::MIN);
    for pos in 0..out.len().saturating_sub(c.len()) {
        let v = ncc(&c, &out[pos..pos + c.len()], 0);
        if v > best {
            (best_pos, best) = (pos, v);
        }
    }
    let lag = best_pos as i64 - input.chirps[0] as i64;
    let seg = 8_000usize;
    let mut corrs = Vec::new();
    let mut s0 = input.speech.start;
    while s0 + seg <= input.speech.end {
        let speech = &input.samples[s0..s0 + seg];
        let mut corr = f64::MIN;
        for l in (lag - 2_400)..=(lag + 2_400) {
            let start = s0 as i64 + l;
            if start < 0 || start as usize + seg > out.len() {
                continue;
            }
            corr = corr.max(ncc(speech, &out[start as usize..start as usize + seg], 0));
        }
        corrs.push(corr);
        s0 += seg;
    }
    (lag, best, corrs.iter().sum::<f64>() / corrs.len().max(1) as f64)
}

fn sas_of(p: &client_common::Proc) -> String {
    p.seen.iter().find(|v| v["event"] == "sas_ready").map(|v| v["sas"].as_str().unwrap().to_owned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_workflow_speech_both_ways_same_sas_and_clean_exit() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let a_in = make_input(alice.home(), 2.0);
    let b_in = make_input(bob.home(), 2.0);
    let a_out = alice.home().join("heard.wav");
    let b_out = bob.home().join("heard.wav");

    let mut b = bob.spawn(&[
        "listen",
        "--auto-answer",
        "--once",
        "--input",
        b_in.path.to_str().unwrap(),
        "--output",
        b_out.to_str().unwrap(),
    ]);
    b.wait_for("connection", SHORT, |v| v["connected"] == true).await;
    let mut a = alice.spawn(&[
        "call",
        "bob",
        "--duration",
        "4.5",
        "--input",
        a_in.path.to_str().unwrap(),
        "--output",
        a_out.to_str().unwrap(),
    ]);
    a.wait(SHORT_EVENT, SHORT).await;
    b.wait("incoming_call", SHORT).await;
    a.wait("sas_ready", SHORT).await;
    b.wait("sas_ready", SHORT).await;
    assert_eq!(sas_of(&a), sas_of(&b), "both sides must show the same SAS");
    a.wait("audio_flowing", SHORT).await;
    b.wait("audio_flowing", SHORT).await;
    assert_eq!(a.exit_code(LONG).await, 0, "caller exit code");
    assert_eq!(b.exit_code(LONG).await, 0, "callee exit code");
    assert_eq!(a.end_reason().as_deref(), Some("local_hangup"));
    assert_eq!(b.end_reason().as_deref(), Some("remote_hangup"));
    let am = a.last_metrics().unwrap();
    assert!(am["frames_sent"].as_u64().unwrap() > 150, "{am}");
    assert!(am["frames_received"].as_u64().unwrap() > 150, "{am}");

    for (who, input, out) in [("bob hears alice", &a_in, &b_out), ("alice hears bob", &b_in, &a_out)] {
        let (samples, rate) = read_wav(out);
        assert_eq!(rate, 16_000);
        let (lag, chirp_corr, speech_corr) = align_and_correlate(input, &samples);
        eprintln!(
            "{who}: lag {lag} samples ({:.1} ms), chirp {chirp_corr:.3}, speech {speech_corr:.3}",
            lag as f64 / 16.0
        );
        assert!(chirp_corr > 0.8, "{who}: chirp correlation {chirp_corr}");
        assert!(speech_corr >= 0.8, "{who}: speech correlation {speech_corr}");
    }
}

const SHORT_EVENT: &str = "ringing";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_call_ends_on_both_sides() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--once"]).await;
    let mut a = alice.call("bob", &[]);
    b.wait("incoming_call", SHORT).await;
    b.send_line("reject").await;
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("rejected"));
    assert_eq!(b.exit_code(SHORT).await, 0);
    assert_eq!(b.end_reason().as_deref(), Some("rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_cancels_while_ringing() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--once"]).await;
    let mut a = alice.call("bob", &[]);
    a.wait("ringing", SHORT).await;
    b.wait("incoming_call", SHORT).await;
    a.send_line("hangup").await;
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("cancelled"));
    b.wait("ended", SHORT).await;
    assert_eq!(b.end_reason().as_deref(), Some("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_is_missed_after_the_ringing_timeout() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_millis(1500)).await;
    let mut b = bob.listen(&["--once"]).await;
    let mut a = alice.call("bob", &[]);
    b.wait("incoming_call", SHORT).await;
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("missed"));
    b.wait("ended", SHORT).await;
    assert_eq!(b.end_reason().as_deref(), Some("missed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_offline_rings_then_ends_as_offline() {
    // A callee without an event stream is rung like any other (it may be polling): nobody answers here, so
    // after the ringing timeout the caller says it was offline rather than merely missed.
    let (_reg, alice, _bob) = alice_and_bob(Duration::from_millis(1500)).await;
    let mut a = alice.call("bob", &[]);
    a.wait("ringing", SHORT).await;
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("offline"));
    let mut a = alice.call("nobody", &[]);
    assert_eq!(a.exit_code(SHORT).await, 4);
    assert_eq!(a.end_reason().as_deref(), Some("unknown_user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_callee() {
    // Call waiting (issue 12): a callee in a call is never answered `busy` (that told any caller the callee
    // was on a call); the second call rings and is taken once the first ends.
    let (reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let carol = User::init("carol", &reg.url()).await;
    let mut b = bob.listen(&["--auto-answer"]).await;
    let mut c = carol.call("bob", &["--duration", "20"]);
    c.wait("active", SHORT).await;
    let mut a = alice.call("bob", &[]);
    a.wait("ringing", SHORT).await;
    b.wait_for("call_waiting", SHORT, |v| v["from"] == "alice").await;
    c.send_line("hangup").await;
    assert_eq!(c.exit_code(SHORT).await, 0);
    a.wait("active", SHORT).await;
    a.send_line("hangup").await;
    assert_eq!(a.exit_code(SHORT).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_call_ends_with_a_reason() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--peer-timeout", "2"]);
    a.wait("audio_flowing", SHORT).await;
    let status = std::process::Command::new("kill").args(["-9", &b.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    assert_eq!(a.exit_code(SHORT).await, 7);
    assert_eq!(a.end_reason().as_deref(), Some("peer_vanished"));
    assert!(started.elapsed() < Duration::from_secs(6), "ended after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_restart_mid_call_does_not_stop_media() {
    let (mut reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--duration", "5"]);
    a.wait("audio_flowing", SHORT).await;
    reg.stop().await;
    b.wait_for("connection", SHORT, |v| v["connected"] == false).await;
    let before = a.wait("metrics", SHORT).await["metrics"]["frames_received"].as_u64().unwrap();
    // One second of 20 ms frames keeps arriving with the registry down.
    a.wait_for("metrics", SHORT, |v| v["metrics"]["frames_received"].as_u64().unwrap() > before + 45).await;
    reg.restart().await;
    b.wait_for("connection", LONG, |v| v["connected"] == true).await;
    assert_eq!(a.exit_code(LONG).await, 0);
    assert_eq!(b.exit_code(LONG).await, 0);
    assert_eq!(b.end_reason().as_deref(), Some("remote_hangup"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substituted_identity_key_at_the_registry_is_refused() {
    // A first call pins bob's identity key.
    let (reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--duration", "0.5"]);
    assert_eq!(a.exit_code(LONG).await, 0);
    assert_eq!(b.exit_code(LONG).await, 0);

    // A malicious registry serves Mallory's keys under the name "bob".
    let evil = Registry::start(Duration::from_secs(45)).await;
    let mallory = User::init("bob", &evil.url()).await;
    let cfg_path = alice.home().join("config.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap().replace(&reg.url(), &evil.url());
    std::fs::write(&cfg_path, cfg).unwrap();
    let _m = mallory.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &[]);
    assert_eq!(a.exit_code(SHORT).await, 6);
    assert_eq!(a.end_reason().as_deref(), Some("security_failure"));
    assert!(a.seen.iter().any(|v| v["event"] == "key_warning" && v["username"] == "bob"));
    assert!(!a.seen.iter().any(|v| v["event"] == "dialing"), "no OFFER may be sent to a changed key");
    // `qvoice contacts` shows the warning until the user verifies.
    let out = std::process::Command::new(client_common::BIN)
        .args(["--home", alice.home().to_str().unwrap(), "contacts"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("KeyChanged") && text.contains("WARNING"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ringing_when_the_registry_restarts_ends_on_both_sides() {
    // The registry keeps calls in memory: after a restart the ringing call is gone, and neither side may
    // stay stuck in it (each would refuse every later call as busy).
    let (mut reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&[]).await;
    let mut a = alice.call("bob", &[]);
    b.wait("incoming_call", SHORT).await;
    reg.restart().await;
    assert_eq!(a.exit_code(LONG).await, 1);
    assert_eq!(a.end_reason().as_deref(), Some("failed"));
    b.wait("ended", LONG).await;
    assert_eq!(b.end_reason().as_deref(), Some("failed"));
}

/// The SAS did not match on alice's side (`mismatch`, the TUI's `n`): she hangs up, bob is told why (not
/// "peer hung up"), and bob stays marked suspicious in alice's contacts, so calling him again is refused until
/// `qvoice verify bob`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_mismatch_tells_the_peer_and_blocks_calls_until_verified() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &[]);
    a.wait("sas_ready", SHORT).await;
    a.wait("active", SHORT).await;
    a.send_line("mismatch").await;
    assert_eq!(a.exit_code(SHORT).await, 6);
    assert_eq!(a.end_reason().as_deref(), Some("sas_mismatch"));
    let ended = b.wait("ended", SHORT).await;
    assert_eq!(ended["reason"]["kind"], "security_failure", "{ended}");
    let why = ended["reason"]["detail"].as_str().unwrap_or_default();
    assert!(why.contains("SAS") && why.contains("did not match"), "{ended}");
    let contacts = std::fs::read_to_string(alice.home().join("contacts.json"))
        .or_else(|_| std::fs::read_to_string(alice.home().join("data/contacts.json")))
        .unwrap_or_default();
    let mut again = alice.call("bob", &[]);
    assert_eq!(again.exit_code(SHORT).await, 6, "contacts: {contacts}");
    let ended = again.wait("ended", SHORT).await;
    assert!(ended["reason"]["detail"].as_str().unwrap_or_default().contains("qvoice verify bob"), "{ended}");
}
