//! Protocol-version-2 rules at the registry (docs/REGISTRY.md, docs/PROTOCOL.md): request signatures
//! bound to the registry's origin, prekey expiry, handshake version refusal, and the end kind relayed
//! between the parties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, ORIGIN, Party, SseReader, T0};
use qvoice_proto::{auth, b64};
use qvoice_wire::{CallState, EndKind, ErrorCode, Event, StatusResponse};
use serde_json::json;

/// `who`'s auth headers for a request signed for `origin` (instead of the tests' fixed one).
fn signed_for(origin: &str, who: &Party, method: &str, pq: &str, ts: u64, body: &[u8]) -> Vec<(String, String)> {
    let sig = auth::sign_request(&who.id, origin, method, pq, &who.name, ts, body);
    vec![
        (auth::HEADER_USER.to_owned(), who.name.clone()),
        (auth::HEADER_TIMESTAMP.to_owned(), ts.to_string()),
        (auth::HEADER_SIGNATURE.to_owned(), b64::encode(&sig)),
        (auth::HEADER_ORIGIN.to_owned(), origin.to_owned()),
    ]
}

/// Registers `p` at `h` with a request signed for `origin`.
async fn register_for(h: &Harness, origin: &str, p: &Party) -> common::Resp {
    let body = serde_json::to_vec(&p.register_body()).unwrap();
    h.raw("POST", "/register", signed_for(origin, p, "POST", "/register", h.ts(), &body), body).await
}

#[tokio::test]
async fn a_request_signed_for_one_registry_is_refused_by_another() {
    // Two registries with no configured public URL (each checks the Host header); alice is registered at
    // both with the same key (the setting of issue 12's finding).
    let a = Harness::server_with(|c| c.public_origins.clear()).await;
    let b = Harness::server_with(|c| c.public_origins.clear()).await;
    let origin_a = auth::origin_of_url(a.base()).unwrap();
    let origin_b = auth::origin_of_url(b.base()).unwrap();
    let alice = Party::new("alice");
    register_for(&a, &origin_a, &alice).await.ok(201);
    register_for(&b, &origin_b, &alice).await.ok(201);
    // A signed /users request captured at A and replayed to B within the skew window.
    let ts = a.ts();
    let hdrs = signed_for(&origin_a, &alice, "GET", "/users", ts, b"");
    a.raw("GET", "/users", hdrs.clone(), vec![]).await.ok(200);
    let r = b.raw("GET", "/users", hdrs, vec![]).await;
    r.err(401, ErrorCode::WrongOrigin);
    assert!(r.json["message"].as_str().unwrap().contains(&origin_a), "{:?}", r.json);
    // Not canonical, or absent.
    let mut hdrs = signed_for(&origin_b, &alice, "GET", "/users", b.ts(), b"");
    hdrs[3].1 = b.base().to_owned() + "/";
    b.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::WrongOrigin);
    let mut hdrs = signed_for(&origin_b, &alice, "GET", "/users", b.ts(), b"");
    hdrs.pop();
    b.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::MissingAuth);
}

#[tokio::test]
async fn a_configured_public_url_ignores_a_forged_host_header() {
    // The tests' registries are configured with ORIGIN; a request signed for another registry carries a
    // Host header naming that registry, which must not help.
    let h = Harness::server().await;
    let alice = Party::new("alice");
    h.register(&alice).await.ok(201);
    let mut hdrs = signed_for("http://other.test:80", &alice, "GET", "/users", h.ts(), b"");
    hdrs.push(("host".to_owned(), "other.test".to_owned()));
    h.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::WrongOrigin);
    let hdrs = signed_for(ORIGIN, &alice, "GET", "/users", h.ts(), b"");
    h.raw("GET", "/users", hdrs, vec![]).await.ok(200);
}

#[tokio::test]
async fn an_expired_prekey_is_not_registered() {
    let h = Harness::router();
    let alice = Party::new("alice");
    let mut body = alice.register_body();
    body["prekey"] = json!(b64::encode(&alice.prekey.sign(&alice.id, T0).to_bytes()));
    let r = h.post("/register", &alice, body).await;
    r.err(400, ErrorCode::InvalidField);
    assert!(r.json["message"].as_str().unwrap().contains("expired"));
    // A version-1 prekey (1252 bytes, no expiry) is not a key this registry takes.
    let mut body = alice.register_body();
    let v2 = alice.signed_prekey().to_bytes();
    let v1: Vec<u8> = [&v2[..4], &v2[12..]].concat();
    body["prekey"] = json!(b64::encode(&v1));
    h.post("/register", &alice, body).await.err(400, ErrorCode::InvalidKey);
}

#[tokio::test]
async fn a_handshake_message_of_another_version_is_refused_as_such() {
    let h = Harness::router();
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let (_c, offer) = h.offer(&alice, &bob);
    for v in [1u8, 3] {
        let mut raw = offer.to_bytes().to_vec();
        raw[0] = v;
        let r = h.post("/call/initiate", &alice, json!({ "offer": b64::encode(&raw) })).await;
        r.err(400, ErrorCode::UnsupportedVersion);
        assert!(r.json["message"].as_str().unwrap().contains(&format!("version {v}")), "{:?}", r.json);
    }
}

#[tokio::test]
async fn the_end_kind_reaches_the_other_party() {
    let h = Harness::server().await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let mut alice_events = SseReader::open(h.base(), &alice, h.ts()).await;
    alice_events.until("ready", Duration::from_secs(5)).await;
    let (_c, _offer, id) = h.ring(&alice, &bob).await;
    // Bob's client cannot run the OFFER and refuses it before answering.
    let reason = "no common frame duration for pcm: offered 64 ms; the callee runs 10/20/40 ms";
    let body = json!({ "call_id": id, "reason": reason, "kind": "incompatible" });
    h.post("/call/reject", &bob, body).await.ok(200);
    let ev: Event = serde_json::from_value(alice_events.until("call_ended", Duration::from_secs(5)).await).unwrap();
    let want = Event::CallEnded {
        call_id: id.clone(),
        state: CallState::Rejected,
        reason: Some(reason.to_owned()),
        kind: Some(EndKind::Incompatible),
    };
    assert_eq!(ev, want);
    let st: StatusResponse = serde_json::from_value(h.status(&alice, &id).await.ok(200).clone()).unwrap();
    assert_eq!(
        (st.state, st.end_kind, st.reason.as_deref()),
        (CallState::Rejected, Some(EndKind::Incompatible), Some(reason))
    );
    // A kind this registry does not know (a newer client) ends the call all the same; it is relayed as
    // `unknown`, which clients treat like `error`.
    let (_c, _offer, id) = h.ring(&alice, &bob).await;
    h.post("/call/reject", &bob, json!({ "call_id": id, "kind": "teleported" })).await.ok(200);
    let st: StatusResponse = serde_json::from_value(h.status(&alice, &id).await.ok(200).clone()).unwrap();
    assert_eq!(st.end_kind, Some(EndKind::Unknown));
}
