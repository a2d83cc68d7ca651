//! Call-setup latency on loopback, through the real registry and two real session drivers:
//! dial → the callee is told (it rings), and accept → the first audio frame is played on each side.
//!
//! Run: `cargo bench -p qvoice --bench call_setup` (CALLS=N to change the number of calls, default 30).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use qvoice::media::{AudioIn, AudioOut};
use qvoice::session::store::{ContactBook, Keystore};
use qvoice::session::{SessionCommand, SessionEvent, SessionOptions};
use qvoice_proto::Username;
use tokio::sync::mpsc;

fn options(dir: &std::path::Path, name: &str, url: &str, auto_answer: bool) -> SessionOptions {
    let home = dir.join(name);
    let ks = Keystore::create(&home, Username::parse(name).unwrap(), 0, true).unwrap();
    let mut o = SessionOptions::new(url.to_owned(), ks, ContactBook::load(&home).unwrap());
    o.input = AudioIn::Silence;
    o.output = AudioOut::Null;
    o.auto_answer = auto_answer;
    o
}

async fn next(rx: &mut mpsc::Receiver<SessionEvent>, pred: impl Fn(&SessionEvent) -> bool) -> Instant {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
        if let SessionEvent::Ended { reason, .. } = &ev
            && !pred(&ev)
        {
            panic!("call ended early: {reason:?}");
        }
        if pred(&ev) {
            return Instant::now();
        }
    }
}

fn stats(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<38} median {:7.2} ms   p90 {:7.2} ms   min {:7.2} ms   max {:7.2} ms",
        pct(0.5),
        pct(0.9),
        v[0],
        v[v.len() - 1]
    );
}

fn main() {
    let calls: usize = std::env::var("CALLS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = qvoice_registry::Config::new(dir.path().join("registry.sqlite3"));
        cfg.bind = "127.0.0.1:0".parse().unwrap();
        // The bench dials one callee 30 times in a row; the per-pair ring limit is for strangers.
        cfg.rate_limits = qvoice_registry::limits::RateLimits::all(1_000_000);
        let reg = qvoice_registry::spawn(cfg).await.unwrap();
        let url = reg.url();
        let (a_cmd, a_rx) = mpsc::channel(8);
        let (a_tx, mut a_ev) = mpsc::channel(1024);
        let (b_cmd, b_rx) = mpsc::channel(8);
        let (b_tx, mut b_ev) = mpsc::channel(1024);
        let a = tokio::spawn(qvoice::session::run(options(dir.path(), "alice", &url, false), a_rx, a_tx));
        let b = tokio::spawn(qvoice::session::run(options(dir.path(), "bob", &url, true), b_rx, b_tx));
        next(&mut b_ev, |e| matches!(e, SessionEvent::Connection { connected: true, .. })).await;
        next(&mut a_ev, |e| matches!(e, SessionEvent::Connection { connected: true, .. })).await;
        let (mut ring, mut caller_hears, mut callee_hears, mut handshake) = (vec![], vec![], vec![], vec![]);
        for _ in 0..calls {
            let t0 = Instant::now();
            a_cmd.send(SessionCommand::Dial("bob".into())).await.unwrap();
            // Auto-answer accepts the moment the call rings.
            let t_ring = next(&mut b_ev, |e| matches!(e, SessionEvent::IncomingCall { .. })).await;
            let t_sas = next(&mut a_ev, |e| matches!(e, SessionEvent::SasReady { .. })).await;
            let t_b_audio = next(&mut b_ev, |e| matches!(e, SessionEvent::AudioFlowing { .. })).await;
            let t_a_audio = next(&mut a_ev, |e| matches!(e, SessionEvent::AudioFlowing { .. })).await;
            ring.push((t_ring - t0).as_secs_f64() * 1e3);
            handshake.push((t_sas - t_ring).as_secs_f64() * 1e3);
            callee_hears.push((t_b_audio - t_ring).as_secs_f64() * 1e3);
            caller_hears.push((t_a_audio - t_ring).as_secs_f64() * 1e3);
            a_cmd.send(SessionCommand::Hangup).await.unwrap();
            next(&mut a_ev, |e| matches!(e, SessionEvent::Ended { .. })).await;
            next(&mut b_ev, |e| matches!(e, SessionEvent::Ended { .. })).await;
        }
        println!("call setup on loopback, {calls} calls (real registry, ML-KEM-768 + X25519 handshake, Opus 20 ms):");
        stats("dial -> callee rings", ring);
        stats("accept -> keys agreed at the caller", handshake);
        stats("accept -> first audio played (callee)", callee_hears);
        stats("accept -> first audio played (caller)", caller_hears);
        a_cmd.send(SessionCommand::Shutdown).await.unwrap();
        b_cmd.send(SessionCommand::Shutdown).await.unwrap();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        reg.shutdown().await.unwrap();
    });
}
