//! Behaviour only a real server shows: push over `/events` (incoming call, accept, confirm,
//! missed, presence), long-polled `/call/pending`, the reflexive address, metrics over HTTP and
//! graceful shutdown ending open streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Party, SseReader, finish};
use qvoice_proto::b64;
use qvoice_registry::clock::Clock as _;
use qvoice_wire::ErrorCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn callee_on_events_sees_the_whole_call_and_presence() {
    let h = Harness::server().await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let mut bob_ev = SseReader::open(h.base(), &bob, h.clock.now_ms()).await;
    let ready = bob_ev.until("ready", WAIT).await;
    assert_eq!(ready["username"], "bob");
    let mut alice_ev = SseReader::open(h.base(), &alice, h.clock.now_ms()).await;
    alice_ev.until("ready", WAIT).await;
    let p = bob_ev.until("presence", WAIT).await;
    assert_eq!((p["username"].as_str(), p["online"].as_bool()), (Some("alice"), Some(true)));
    // A new registration is announced to those online (not to the new user), before it ever comes online.
    h.register(&Party::new("carol")).await.ok(201);
    let r = bob_ev.until("user_registered", WAIT).await;
    assert_eq!(r["username"], "carol");
    assert_eq!(h.raw("GET", "/fetch/alice", vec![], vec![]).await.json["online"], true);

    let (caller, offer, id) = h.ring(&bob, &alice).await;
    let inc = alice_ev.until("incoming_call", WAIT).await;
    assert_eq!((inc["call_id"].as_str(), inc["caller"].as_str()), (Some(id.as_str()), Some("bob")));
    assert_eq!(inc["offer"], b64::encode(offer.to_bytes()));

    let (callee, answer) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer).await.ok(200);
    let acc = bob_ev.until("call_accepted", WAIT).await;
    let relayed = qvoice_proto::Answer::parse(&b64::decode(acc["answer"].as_str().unwrap()).unwrap()).unwrap();
    let (reveal, ck, _) = {
        let (r, ck) = caller.on_answer(&mut rand::rng(), &relayed).unwrap();
        (r, ck, ())
    };
    h.confirm(&bob, &reveal).await.ok(200);
    let conf = alice_ev.until("call_confirmed", WAIT).await;
    let rev = qvoice_proto::Reveal::parse(&b64::decode(conf["reveal"].as_str().unwrap()).unwrap()).unwrap();
    let ek = callee.on_reveal(&rev, std::slice::from_ref(&alice.prekey)).unwrap();
    assert_eq!(ck.sas, ek.sas);

    h.post("/call/hangup", &bob, json!({ "call_id": id })).await.ok(200);
    let end = alice_ev.until("call_ended", WAIT).await;
    assert_eq!(end["state"], "ended");

    drop(alice_ev);
    let p = bob_ev.until("presence", WAIT).await;
    assert_eq!((p["username"].as_str(), p["online"].as_bool()), (Some("alice"), Some(false)));
    let f = h.raw("GET", "/fetch/alice", vec![], vec![]).await;
    assert_eq!(f.json["online"], false);
    assert_eq!(f.json["last_seen_ms"], common::T0);
}

#[tokio::test]
async fn missed_call_is_pushed_to_both_parties() {
    let h = Harness::server().await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let mut a = SseReader::open(h.base(), &alice, h.clock.now_ms()).await;
    let mut b = SseReader::open(h.base(), &bob, h.clock.now_ms()).await;
    a.until("ready", WAIT).await;
    b.until("ready", WAIT).await;
    let (_c, _o, id) = h.ring(&bob, &alice).await;
    a.until("incoming_call", WAIT).await;
    h.clock.advance(Duration::from_secs(45));
    h.state.sweep();
    for ev in [a.until("call_ended", WAIT).await, b.until("call_ended", WAIT).await] {
        assert_eq!((ev["call_id"].as_str(), ev["state"].as_str()), (Some(id.as_str()), Some("missed")));
    }
}

#[tokio::test]
async fn real_clock_sweeper_turns_ringing_into_missed() {
    // The client tests use a short ringing timeout with the real clock; the sweeper must fire on
    // its own.
    let h = Harness::server_with(|c| {
        c.clock = std::sync::Arc::new(qvoice_registry::clock::SystemClock);
        c.ringing_timeout = Duration::from_millis(300);
    })
    .await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    let now = || qvoice_registry::clock::Clock::now_ms(&qvoice_registry::clock::SystemClock);
    let reg = |p: &Party| {
        let body = serde_json::to_vec(&p.register_body()).unwrap();
        (p.auth_headers("POST", "/register", now(), &body), body)
    };
    for p in [&alice, &bob] {
        let (hd, body) = reg(p);
        h.raw("POST", "/register", hd, body).await.ok(201);
    }
    let mut b = SseReader::open(h.base(), &bob, now()).await;
    b.until("ready", WAIT).await;
    let (_c, offer) = common::offer_at(now(), &bob, &alice);
    let body = serde_json::to_vec(&json!({ "offer": b64::encode(offer.to_bytes()) })).unwrap();
    h.raw("POST", "/call/initiate", bob.auth_headers("POST", "/call/initiate", now(), &body), body).await.ok(201);
    let ev = b.until("call_ended", WAIT).await;
    assert_eq!(ev["state"], "missed");
}

#[tokio::test]
async fn long_poll_pending_wakes_on_initiate() {
    let h = Harness::server().await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let base = h.base().to_owned();
    let hdrs = alice.auth_headers("GET", "/call/pending/alice?wait=20", h.clock.now_ms(), b"");
    let poll = tokio::spawn(async move {
        let mut b = reqwest::Client::new().get(format!("{base}/call/pending/alice?wait=20"));
        for (k, v) in hdrs {
            b = b.header(k, v);
        }
        let started = std::time::Instant::now();
        let v: serde_json::Value = b.send().await.unwrap().json().await.unwrap();
        (v, started.elapsed())
    });
    // Initiate only once the long-poll is parked (it subscribes before its first look).
    let rx_wait = async {
        while h.state.hub().long_pollers() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, rx_wait).await.unwrap();
    let (_c, _o, id) = h.ring(&bob, &alice).await;
    let (v, took) = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    assert_eq!(v["calls"][0]["call_id"], id);
    assert!(took < Duration::from_secs(20));
    h.get("/call/pending/alice?wait=31", &alice).await.err(400, ErrorCode::InvalidField);
    // wait=0 answers at once with nothing ringing for bob.
    assert!(h.get("/call/pending/bob?wait=0", &bob).await.ok(200)["calls"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn register_reports_the_observed_address_and_metrics_are_served() {
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::server_with(|c| {
        c.metrics_token = Some("s3cret".into());
        c.metrics_bind = Some(metrics_addr);
    })
    .await;
    let alice = Party::new("alice");
    let r = h.register(&alice).await;
    let addr: std::net::SocketAddr = r.ok(201)["observed_addr"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback());
    // On the public address only with the token.
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", h.base());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 404);
    let text = client.get(&url).bearer_auth("s3cret").send().await.unwrap().text().await.unwrap();
    assert!(text.contains("qvoice_registry_requests_total{route=\"/register\",status=\"201\"} 1"), "{text}");
    assert!(text.contains("qvoice_registry_users 1"), "{text}");
    assert!(text.contains("qvoice_registry_connections "), "{text}");
    // On the separate address without a token, and nothing else there.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
    assert!(text.contains("qvoice_registry_users 1"), "{text}");
    assert_eq!(reqwest::get(format!("http://{metrics_addr}/fetch/alice")).await.unwrap().status(), 404);
}

#[tokio::test]
async fn graceful_shutdown_ends_event_streams() {
    let h = Harness::server().await;
    let alice = Party::new("alice");
    h.register(&alice).await.ok(201);
    let mut a = SseReader::open(h.base(), &alice, h.clock.now_ms()).await;
    a.until("ready", WAIT).await;
    assert_eq!(h.state.hub().connections(), 1);
    let common::Target::Http { running, .. } = h.target else { unreachable!() };
    tokio::time::timeout(WAIT, running.shutdown()).await.unwrap().unwrap();
    assert_eq!(a.next(WAIT).await.map(|e| e.0), None, "stream must end on shutdown");
}

#[tokio::test]
async fn full_handshake_without_events_by_polling_only() {
    // The seed's polling client: no /events stream at all.
    let h = Harness::server().await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let (caller, offer, id) = h.ring(&bob, &alice).await;
    let (callee, answer) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer).await.ok(200);
    let (reveal, ck, ek) = finish(caller, callee, &answer, std::slice::from_ref(&alice.prekey));
    h.confirm(&bob, &reveal).await.ok(200);
    assert_eq!(h.call_state(&alice, &id).await, "active");
    assert_eq!(ck.sas, ek.sas);
}

#[tokio::test]
async fn graceful_shutdown_cuts_parked_long_polls() {
    let h = Harness::server().await;
    let alice = Party::new("alice");
    h.register(&alice).await.ok(201);
    let base = h.base().to_owned();
    let hdrs = alice.auth_headers("GET", "/call/pending/alice?wait=30", h.ts(), b"");
    let poll = tokio::spawn(async move {
        let mut b = reqwest::Client::new().get(format!("{base}/call/pending/alice?wait=30"));
        for (k, v) in hdrs {
            b = b.header(k, v);
        }
        let r = b.send().await.unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    });
    let parked = async {
        while h.state.hub().long_pollers() == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, parked).await.unwrap();
    let common::Target::Http { running, .. } = h.target else { unreachable!() };
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, running.shutdown()).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown waited for the long-poll");
    let (status, body) = tokio::time::timeout(WAIT, poll).await.unwrap().unwrap();
    assert_eq!(
        (status, serde_json::from_value::<ErrorCode>(body["error"].clone()).ok()),
        (503, Some(ErrorCode::ShuttingDown))
    );
}
