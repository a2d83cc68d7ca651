//! Push latency: time from sending `POST /call/initiate` (caller) to the callee's `/events`
//! stream delivering `incoming_call`, on loopback, against the real registry binary.
//! Run: `cargo bench -p qvoice-registry --bench push_latency`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/proc.rs"]
mod proc;

use std::time::{Duration, Instant};

use common::{Party, SseReader, offer_at};
use qvoice_proto::b64;
use serde_json::json;

async fn signed(client: &reqwest::Client, base: &str, who: &Party, pq: &str, body: &serde_json::Value) -> u16 {
    let body = serde_json::to_vec(body).unwrap();
    let mut b = client.post(format!("{base}{pq}")).body(body.clone());
    for (k, v) in who.auth_headers("POST", pq, proc::now_ms(), &body) {
        b = b.header(k, v);
    }
    b.send().await.unwrap().status().as_u16()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    const ROUNDS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = proc::start(&dir.path().join("bench.sqlite3"));
    let client = reqwest::Client::new();
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    for p in [&alice, &bob] {
        assert_eq!(signed(&client, &base, p, "/register", &p.register_body()).await, 201);
    }
    let mut ev = SseReader::open(&base, &alice, proc::now_ms()).await;
    ev.until("ready", Duration::from_secs(5)).await;
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (_c, offer) = offer_at(proc::now_ms(), &bob, &alice);
        let body = json!({ "offer": b64::encode(offer.to_bytes()) });
        let t0 = Instant::now();
        let send = signed(&client, &base, &bob, "/call/initiate", &body);
        let recv = ev.until("incoming_call", Duration::from_secs(5));
        let (status, _) = tokio::join!(send, async {
            let v = recv.await;
            samples.push(u64::try_from(t0.elapsed().as_micros()).unwrap());
            v
        });
        assert_eq!(status, 201);
        let id = offer.call_id.to_hex();
        assert_eq!(signed(&client, &base, &bob, "/call/cancel", &json!({ "call_id": id })).await, 200);
        ev.until("call_ended", Duration::from_secs(5)).await;
    }
    samples.sort_unstable();
    println!(
        "push latency initiate->incoming_call over {ROUNDS} calls: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        proc::pct(&samples, 0.5),
        proc::pct(&samples, 0.9),
        proc::pct(&samples, 0.99),
        proc::pct(&samples, 1.0)
    );
    proc::stop(child);
}
