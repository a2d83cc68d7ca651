//! Load generator against the real registry binary on loopback: register throughput, closed-loop
//! fetch throughput with latency percentiles, an open-loop 5k fetch/s run (latency measured from
//! each request's scheduled start, so queueing is counted), and the server's RSS idle and under
//! load. Client and server share this machine's cores.
//! Run: `cargo bench -p qvoice-registry --bench load` (env LOAD_SECS, default 10).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/proc.rs"]
mod proc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Party;

const USERS: usize = 1000;

async fn register(client: &reqwest::Client, base: &str, p: &Party) -> u16 {
    let body = serde_json::to_vec(&p.register_body()).unwrap();
    let mut b = client.post(format!("{base}/register")).body(body.clone());
    for (k, v) in p.auth_headers("POST", "/register", proc::now_ms(), &body) {
        b = b.header(k, v);
    }
    b.send().await.unwrap().status().as_u16()
}

fn summary(name: &str, mut lat: Vec<u64>, elapsed: Duration) {
    lat.sort_unstable();
    println!(
        "{name}: {} requests in {:.2} s = {:.0} req/s; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        proc::pct(&lat, 0.5),
        proc::pct(&lat, 0.99),
        proc::pct(&lat, 1.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = proc::start(&dir.path().join("bench.sqlite3"));
    let pid = child.id();
    let (rss0, _) = proc::rss_kib(pid);
    println!("server RSS at start: {} KiB", rss0);

    // Register: keys generated up front, 16 concurrent clients.
    let parties: Arc<Vec<Party>> = Arc::new((0..USERS).map(|i| Party::new(&format!("u{i:05}"))).collect());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (parties, base) = (parties.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            for i in (w..USERS).step_by(16) {
                let s = Instant::now();
                assert_eq!(register(&client, &base, &parties[i]).await, 201);
                lat.push(u64::try_from(s.elapsed().as_micros()).unwrap());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    summary("register (16 concurrent, fsync per commit)", lat, t.elapsed());
    let (rss_idle, _) = proc::rss_kib(pid);
    println!("server RSS idle with {USERS} users: {rss_idle} KiB");

    // Closed loop: 32 concurrent connections fetching as fast as they can.
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let t = Instant::now();
    for w in 0..32usize {
        let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let s = Instant::now();
                let r = client.get(format!("{base}/fetch/u{:05}", i % USERS)).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(u64::try_from(s.elapsed().as_micros()).unwrap());
                i += 32;
            }
            lat
        }));
    }
    let mut peak = 0;
    let sample_until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < sample_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(proc::rss_kib(pid).0);
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    summary("fetch closed-loop (32 concurrent)", lat, t.elapsed());
    println!("server RSS under closed-loop load: peak sampled {peak} KiB");

    // Open loop: 5000 req/s from 50 workers at 100 req/s each.
    let mut tasks = Vec::new();
    let t = Instant::now();
    let n_per = secs * 100;
    for w in 0..50usize {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now() + Duration::from_micros(200 * w as u64);
            let (mut sched, mut sent) = (Vec::new(), Vec::new());
            for k in 0..n_per {
                let due = start + Duration::from_millis(10 * k);
                tokio::time::sleep_until(due).await;
                let s = tokio::time::Instant::now();
                let r = client.get(format!("{base}/fetch/u{:05}", (w * 7 + k as usize) % USERS)).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                sched.push(u64::try_from(due.elapsed().as_micros()).unwrap());
                sent.push(u64::try_from(s.elapsed().as_micros()).unwrap());
            }
            (sched, sent)
        }));
    }
    let (mut sched, mut sent) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.unwrap();
        sched.extend(a);
        sent.extend(b);
    }
    let took = t.elapsed();
    // Tokio timers have 1 ms granularity, so "from scheduled start" includes up to ~1 ms of timer
    // lateness on top of queueing; "from send" is the request's own round trip.
    summary("fetch open-loop target 5000 req/s, latency from scheduled start", sched, took);
    summary("fetch open-loop target 5000 req/s, latency from send", sent, took);
    let (rss_now, hwm) = proc::rss_kib(pid);
    println!("server RSS after load: {rss_now} KiB, peak (VmHWM) {hwm} KiB");
    proc::stop(child);
}
