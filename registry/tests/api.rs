//! The registry's HTTP contract: the seed's workflow and every documented error path, each run
//! twice: through `router(state)` with no socket, and through a real server on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Party, answer_at, finish, offer_at};
use qvoice_proto::b64;
use qvoice_registry::clock::Clock as _;
use qvoice_wire::ErrorCode;
use serde_json::{Value, json};

/// Generates `<name>_router` and `<name>_server` tests from `async fn name(h: Harness)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn router() { super::$name(super::Harness::router()).await }
            #[tokio::test]
            async fn server() { super::$name(super::Harness::server().await).await }
        }
    )* };
}

both!(
    seed_workflow,
    unknown_user,
    calling_yourself,
    accept_by_third_party,
    confirm_before_accept,
    double_accept,
    hangup_unknown_call,
    ringing_expires_to_missed,
    busy_callee,
    bad_signature,
    stale_timestamp,
    replayed_request,
    oversized_body,
    wrong_key_length,
    invalid_base64,
    invalid_username,
    username_taken_and_key_rotation,
    auth_header_errors,
    forged_handshake_messages,
    cancel_reject_and_roles,
    unknown_route_and_method,
    users_directory,
);

async fn two(h: &Harness) -> (Party, Party) {
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    assert_eq!(h.register(&alice).await.ok(201)["created"], true);
    h.register(&bob).await.ok(201);
    (alice, bob)
}

async fn seed_workflow(h: Harness) {
    let (alice, bob) = two(&h).await;
    // fetch: the public bundle bob needs to call alice.
    let f = h.raw("GET", "/fetch/alice", vec![], vec![]).await;
    let f = f.ok(200);
    assert_eq!(f["identity_key"], b64::encode(alice.key().as_bytes()));
    assert_eq!(f["prekey"], b64::encode(&alice.signed_prekey().to_bytes()));
    assert_eq!(f["prekey_id"], 7);
    assert_eq!(f["media_port"], 5556);
    assert_eq!(f["online"], false);
    // initiate
    let (caller, offer) = h.offer(&bob, &alice);
    let id = offer.call_id.to_hex();
    let r = h.initiate(&bob, &offer).await;
    let r = r.ok(201);
    assert_eq!((r["call_id"].as_str(), r["state"].as_str()), (Some(id.as_str()), Some("ringing")));
    assert_eq!(r["expires_ms"], common::T0 + 45_000);
    // pending
    let p = h.get("/call/pending/alice", &alice).await;
    let calls = p.ok(200)["calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["call_id"], id);
    assert_eq!(calls[0]["caller"], "bob");
    let relayed = qvoice_proto::Offer::parse(&b64::decode(calls[0]["offer"].as_str().unwrap()).unwrap()).unwrap();
    // accept (alice answers the offer exactly as relayed)
    let (callee, answer) = h.answer(&alice, &bob, &relayed);
    h.accept(&alice, &answer).await.ok(200);
    assert!(h.get("/call/pending/alice", &alice).await.ok(200)["calls"].as_array().unwrap().is_empty());
    let s = h.status(&bob, &id).await;
    let s = s.ok(200);
    assert_eq!(s["state"], "accepted");
    let relayed_answer = qvoice_proto::Answer::parse(&b64::decode(s["answer"].as_str().unwrap()).unwrap()).unwrap();
    // confirm
    let (reveal, ck, ek) = finish(caller, callee, &relayed_answer, std::slice::from_ref(&alice.prekey));
    h.confirm(&bob, &reveal).await.ok(200);
    let s = h.status(&alice, &id).await;
    assert_eq!(s.ok(200)["state"], "active");
    let relayed_reveal = s.json["reveal"].as_str().unwrap();
    assert_eq!(relayed_reveal, b64::encode(reveal.to_bytes()));
    assert_eq!(ck.sas, ek.sas, "both ends derive the same SAS from the relayed messages");
    // hangup
    let r = h.post("/call/hangup", &alice, json!({ "call_id": id, "reason": "bye" })).await;
    assert_eq!(r.ok(200)["state"], "ended");
    let s = h.status(&bob, &id).await;
    assert_eq!((s.json["state"].as_str(), s.json["reason"].as_str()), (Some("ended"), Some("bye")));
    // Ended calls stay readable for 5 minutes, then are purged.
    h.clock.advance(Duration::from_secs(299));
    h.state.sweep();
    h.status(&bob, &id).await.ok(200);
    h.clock.advance(Duration::from_secs(1));
    h.state.sweep();
    h.status(&bob, &id).await.err(404, ErrorCode::UnknownCall);
}

async fn unknown_user(h: Harness) {
    let (alice, bob) = two(&h).await;
    h.raw("GET", "/fetch/nobody", vec![], vec![]).await.err(404, ErrorCode::UnknownUser);
    let ghost = Party::new("ghost");
    let (_c, offer) = h.offer(&bob, &ghost);
    h.initiate(&bob, &offer).await.err(404, ErrorCode::UnknownUser);
    h.status(&bob, &offer.call_id.to_hex()).await.err(404, ErrorCode::UnknownCall);
    // An unregistered signer is not authenticated.
    h.get("/users", &ghost).await.err(401, ErrorCode::Unauthenticated);
    assert!(h.get("/call/pending/alice", &alice).await.ok(200)["calls"].as_array().unwrap().is_empty());
}

async fn calling_yourself(h: Harness) {
    let (alice, _bob) = two(&h).await;
    let (_c, offer) = h.offer(&alice, &alice);
    h.initiate(&alice, &offer).await.err(400, ErrorCode::SelfCall);
    h.status(&alice, &offer.call_id.to_hex()).await.err(404, ErrorCode::UnknownCall);
}

async fn accept_by_third_party(h: Harness) {
    let (alice, bob) = two(&h).await;
    let eve = Party::new("eve");
    h.register(&eve).await.ok(201);
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    // Eve answers an offer that was not for her: proto refuses to even build it, so she signs a
    // genuine answer to an offer bob made for her and submits it against alice's call id.
    let (_c2, offer_for_eve) = h.offer(&bob, &eve);
    let (_e, eve_answer) = h.answer(&eve, &bob, &offer_for_eve);
    let body = json!({ "call_id": id, "answer": b64::encode(eve_answer.to_bytes()) });
    h.post("/call/accept", &eve, body).await.err(400, ErrorCode::InvalidMessage);
    // With a well-formed answer for this very call (alice's), eve is still refused by role.
    let (_a, alice_answer) = h.answer(&alice, &bob, &offer);
    h.accept(&eve, &alice_answer).await.err(403, ErrorCode::Forbidden);
    h.status(&eve, &id).await.err(403, ErrorCode::Forbidden);
    assert_eq!(h.call_state(&alice, &id).await, "ringing");
    // And the caller cannot accept their own call either.
    h.accept(&bob, &alice_answer).await.err(403, ErrorCode::Forbidden);
    assert_eq!(h.call_state(&bob, &id).await, "ringing");
}

async fn confirm_before_accept(h: Harness) {
    let (alice, bob) = two(&h).await;
    let (caller, offer, id) = h.ring(&bob, &alice).await;
    // Build a genuine reveal out of band, then try to use it before the answer was relayed.
    let (callee, answer) = h.answer(&alice, &bob, &offer);
    let (reveal, _, _) = finish(caller, callee, &answer, std::slice::from_ref(&alice.prekey));
    h.confirm(&bob, &reveal).await.err(409, ErrorCode::WrongState);
    let s = h.status(&bob, &id).await;
    assert_eq!(s.ok(200)["state"], "ringing");
    assert!(s.json["reveal"].is_null());
}

async fn double_accept(h: Harness) {
    let (alice, bob) = two(&h).await;
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    let (_a, answer) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer).await.ok(200);
    let first = h.status(&bob, &id).await.json["answer"].clone();
    let (_a2, answer2) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer2).await.err(409, ErrorCode::WrongState);
    let s = h.status(&bob, &id).await;
    assert_eq!((s.json["state"].as_str(), &s.json["answer"]), (Some("accepted"), &first));
}

async fn hangup_unknown_call(h: Harness) {
    let (alice, _bob) = two(&h).await;
    let id = "00112233445566778899aabbccddeeff";
    h.post("/call/hangup", &alice, json!({ "call_id": id })).await.err(404, ErrorCode::UnknownCall);
    h.post("/call/hangup", &alice, json!({ "call_id": "xyz" })).await.err(400, ErrorCode::InvalidField);
    h.post("/call/hangup", &alice, json!({ "call": id })).await.err(400, ErrorCode::InvalidJson);
}

async fn ringing_expires_to_missed(h: Harness) {
    let (alice, bob) = two(&h).await;
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    h.clock.advance(Duration::from_millis(44_999));
    h.state.sweep();
    assert_eq!(h.call_state(&bob, &id).await, "ringing");
    h.clock.advance(Duration::from_millis(1));
    h.state.sweep();
    let s = h.status(&alice, &id).await;
    assert_eq!((s.ok(200)["state"].as_str(), s.json["reason"].as_str()), (Some("missed"), Some("no answer")));
    // The answer arrives too late.
    let (_a, answer) = answer_at(h.clock.now_ms(), &alice, &bob, &offer);
    h.accept(&alice, &answer).await.err(409, ErrorCode::WrongState);
    assert!(h.get("/call/pending/alice", &alice).await.ok(200)["calls"].as_array().unwrap().is_empty());
    // Missed calls no longer make anyone busy.
    h.ring(&bob, &alice).await;
}

async fn busy_callee(h: Harness) {
    // Call waiting: a call ringing for alice does not make her busy for carol (see adversarial.rs).
    let (alice, bob) = two(&h).await;
    let carol = Party::new("carol");
    h.register(&carol).await.ok(201);
    let (_c, _offer, id) = h.ring(&bob, &alice).await;
    let (_c2, offer2) = h.offer(&carol, &alice);
    h.initiate(&carol, &offer2).await.ok(201);
    assert_eq!(h.call_state(&alice, &id).await, "ringing");
    let pending = h.get("/call/pending/alice", &alice).await;
    assert_eq!(pending.ok(200)["calls"].as_array().unwrap().len(), 2);
    // A caller places one call at a time.
    let (_c3, offer3) = h.offer(&bob, &carol);
    h.initiate(&bob, &offer3).await.err(409, ErrorCode::AlreadyInCall);
    // Reusing a call id is refused.
    h.post("/call/cancel", &bob, json!({ "call_id": id })).await.ok(200);
    h.post("/call/cancel", &carol, json!({ "call_id": offer2.call_id.to_hex() })).await.ok(200);
    let (_c4, offer4) = offer_at(h.clock.now_ms(), &carol, &alice);
    h.initiate(&carol, &offer4).await.ok(201);
    h.initiate(&carol, &offer4).await.err(409, ErrorCode::CallExists);
}

async fn bad_signature(h: Harness) {
    let (alice, _bob) = two(&h).await;
    let mallory = Party::new("alice"); // claims alice's name with another key
    let r = h.get("/call/pending/alice", &mallory).await;
    r.err(401, ErrorCode::BadSignature);
    // Tampered body after signing.
    let body = serde_json::to_vec(&json!({ "call_id": "00112233445566778899aabbccddeeff" })).unwrap();
    let hdrs = alice.auth_headers("POST", "/call/hangup", h.clock.now_ms(), &body);
    let mut tampered = body.clone();
    tampered[2] ^= 1;
    h.raw("POST", "/call/hangup", hdrs, tampered).await.err(401, ErrorCode::BadSignature);
    // Re-registration with a valid body but a signature by another key.
    let mut hdrs = mallory.auth_headers("POST", "/register", h.clock.now_ms(), &[]);
    let body = serde_json::to_vec(&alice.register_body()).unwrap();
    hdrs[2] = mallory.auth_headers("POST", "/register", h.clock.now_ms(), &body)[2].clone();
    h.raw("POST", "/register", hdrs, body).await.err(401, ErrorCode::BadSignature);
    let f = h.raw("GET", "/fetch/alice", vec![], vec![]).await;
    assert_eq!(f.json["identity_key"], b64::encode(alice.key().as_bytes()));
}

async fn stale_timestamp(h: Harness) {
    let (alice, _bob) = two(&h).await;
    let now = h.clock.now_ms();
    for (ts, ok) in [(now - 120_000, true), (now + 120_000, true), (now - 120_001, false), (now + 120_001, false)] {
        let hdrs = alice.auth_headers("GET", "/users", ts, b"");
        let r = h.raw("GET", "/users", hdrs, vec![]).await;
        if ok {
            r.ok(200);
        } else {
            r.err(401, ErrorCode::StaleTimestamp);
        }
    }
}

async fn replayed_request(h: Harness) {
    let (alice, bob) = two(&h).await;
    let (_c, _offer, id) = h.ring(&bob, &alice).await;
    let body = serde_json::to_vec(&json!({ "call_id": id })).unwrap();
    let hdrs = alice.auth_headers("POST", "/call/reject", h.clock.now_ms(), &body);
    h.raw("POST", "/call/reject", hdrs.clone(), body.clone()).await.ok(200);
    h.raw("POST", "/call/reject", hdrs.clone(), body.clone()).await.err(401, ErrorCode::Replayed);
    assert_eq!(h.call_state(&bob, &id).await, "rejected");
    // Once the timestamp leaves the skew window the cache forgets it, and the skew check rejects.
    assert!(!h.state.replay().is_empty());
    // (The harness signs a few ms ahead of the clock, never reusing a timestamp.)
    h.clock.advance(Duration::from_secs(121));
    h.state.sweep();
    assert!(h.state.replay().is_empty());
    h.raw("POST", "/call/reject", hdrs, body).await.err(401, ErrorCode::StaleTimestamp);
}

async fn oversized_body(h: Harness) {
    let alice = Party::new("alice");
    let mut v = alice.register_body();
    v["display_name"] = Value::String("x".repeat(64 * 1024));
    h.post("/register", &alice, v).await.err(413, ErrorCode::BodyTooLarge);
    h.raw("GET", "/fetch/alice", vec![], vec![]).await.err(404, ErrorCode::UnknownUser);
    // Exactly at the limit is read (and then rejected for its content, not its size).
    let body = vec![b' '; 64 * 1024];
    let hdrs = alice.auth_headers("POST", "/register", h.clock.now_ms(), &body);
    h.raw("POST", "/register", hdrs, body).await.err(400, ErrorCode::InvalidJson);
}

async fn wrong_key_length(h: Harness) {
    let alice = Party::new("alice");
    let mut v = alice.register_body();
    v["identity_key"] = Value::String(b64::encode(&alice.key().as_bytes()[..31]));
    h.post("/register", &alice, v).await.err(400, ErrorCode::InvalidKey);
    let mut v = alice.register_body();
    let mut pk = alice.signed_prekey().to_bytes();
    pk.pop();
    v["prekey"] = Value::String(b64::encode(&pk));
    h.post("/register", &alice, v).await.err(400, ErrorCode::InvalidKey);
    // Right length, but the prekey is signed by someone else.
    let mut v = alice.register_body();
    v["prekey"] =
        Value::String(b64::encode(&alice.prekey.sign(&Party::new("x").id, common::T0 + 86_400_000).to_bytes()));
    h.post("/register", &alice, v).await.err(400, ErrorCode::BadMessageSignature);
    h.raw("GET", "/fetch/alice", vec![], vec![]).await.err(404, ErrorCode::UnknownUser);
}

async fn invalid_base64(h: Harness) {
    let (alice, bob) = two(&h).await;
    let carol = Party::new("carol");
    let mut v = carol.register_body();
    v["identity_key"] = Value::String("a+b/".into());
    h.post("/register", &carol, v).await.err(400, ErrorCode::InvalidBase64);
    let mut v = carol.register_body();
    v["prekey"] = Value::String(format!("{}==", v["prekey"].as_str().unwrap()));
    h.post("/register", &carol, v).await.err(400, ErrorCode::InvalidBase64);
    h.post("/call/initiate", &bob, json!({ "offer": "!!!" })).await.err(400, ErrorCode::InvalidBase64);
    h.post("/call/initiate", &bob, json!({ "offer": "AAAA" })).await.err(400, ErrorCode::InvalidMessage);
    let r =
        h.post("/call/accept", &alice, json!({ "call_id": "00112233445566778899aabbccddeeff", "answer": "%" })).await;
    r.err(400, ErrorCode::InvalidBase64);
    h.raw("GET", "/fetch/carol", vec![], vec![]).await.err(404, ErrorCode::UnknownUser);
}

async fn invalid_username(h: Harness) {
    for bad in ["Alice", "a%20b", &"a".repeat(33), "caf%C3%A9"] {
        h.raw("GET", &format!("/fetch/{bad}"), vec![], vec![]).await.err(400, ErrorCode::InvalidUsername);
    }
    let p = Party { name: "Bad!".into(), ..Party::new("x") };
    let mut v = p.register_body();
    v["username"] = Value::String("Bad!".into());
    // The header itself is invalid.
    h.post("/register", &p, v).await.err(400, ErrorCode::InvalidUsername);
    let ok = Party::new("good");
    let mut v = ok.register_body();
    v["username"] = Value::String("BAD".into());
    h.post("/register", &ok, v).await.err(400, ErrorCode::InvalidUsername);
    assert_eq!(h.state.store().count(), 0);
}

async fn username_taken_and_key_rotation(h: Harness) {
    let (alice, _bob) = two(&h).await;
    let squatter = Party::new("alice");
    h.register(&squatter).await.err(409, ErrorCode::UsernameTaken);
    // The owner rotates the prekey and changes port: 200, same registration time.
    let rotated = Party { prekey: qvoice_proto::PrekeySecret::generate(&mut rand::rng(), 8), ..alice };
    let mut v = rotated.register_body();
    v["media_port"] = json!(6000);
    h.clock.advance(Duration::from_secs(10));
    let r = h.post("/register", &rotated, v).await;
    assert_eq!(r.ok(200)["created"], false);
    let f = h.raw("GET", "/fetch/alice", vec![], vec![]).await;
    assert_eq!((f.json["prekey_id"].as_u64(), f.json["media_port"].as_u64()), (Some(8), Some(6000)));
    assert_eq!(f.json["registered_ms"], common::T0);
    assert_eq!(f.json["identity_key"], b64::encode(rotated.key().as_bytes()));
    // Bad fields.
    let mut v = rotated.register_body();
    v["media_port"] = json!(0);
    h.post("/register", &rotated, v).await.err(400, ErrorCode::InvalidField);
    let mut v = rotated.register_body();
    v["display_name"] = json!("a\u{7}b");
    h.post("/register", &rotated, v).await.err(400, ErrorCode::InvalidField);
    let mut v = rotated.register_body();
    v["username"] = json!("bob");
    h.post("/register", &rotated, v).await.err(400, ErrorCode::InvalidField);
    let mut v = rotated.register_body();
    v["extra"] = json!(1);
    h.post("/register", &rotated, v).await.err(400, ErrorCode::InvalidJson);
}

async fn auth_header_errors(h: Harness) {
    let (alice, _bob) = two(&h).await;
    h.raw("GET", "/users", vec![], vec![]).await.err(401, ErrorCode::MissingAuth);
    let mut hdrs = alice.auth_headers("GET", "/users", h.clock.now_ms(), b"");
    hdrs[1].1 = "yesterday".into();
    h.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::MissingAuth);
    let mut hdrs = alice.auth_headers("GET", "/users", h.clock.now_ms(), b"");
    hdrs[2].1 = "AAAA".into();
    h.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::BadSignature);
    // Signature over another path is not valid for this one.
    let hdrs = alice.auth_headers("GET", "/users?limit=1", h.clock.now_ms(), b"");
    h.raw("GET", "/users", hdrs, vec![]).await.err(401, ErrorCode::BadSignature);
    h.get("/call/pending/bob", &alice).await.err(403, ErrorCode::Forbidden);
}

async fn forged_handshake_messages(h: Harness) {
    let (alice, bob) = two(&h).await;
    let eve = Party::new("eve");
    h.register(&eve).await.ok(201);
    // Eve relays bob's genuine offer as her own.
    let (_c, offer) = h.offer(&bob, &alice);
    h.initiate(&eve, &offer).await.err(403, ErrorCode::Forbidden);
    // A bit flipped inside the signed offer.
    let mut raw = offer.to_bytes().to_vec();
    let n = raw.len();
    raw[n - 70] ^= 1;
    let r = h.post("/call/initiate", &bob, json!({ "offer": b64::encode(&raw) })).await;
    assert!(r.status == 400 && [ErrorCode::BadMessageSignature, ErrorCode::InvalidMessage].contains(&r.code()));
    // An offer dated outside the skew window.
    let (_c, old) = offer_at(h.clock.now_ms() - 200_000, &bob, &alice);
    h.initiate(&bob, &old).await.err(400, ErrorCode::InvalidField);
    h.status(&bob, &offer.call_id.to_hex()).await.err(404, ErrorCode::UnknownCall);
    // A real answer signed by eve's key, submitted by alice for alice's call.
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    let impostor = Party { name: "alice".into(), ..Party::new("x") };
    let (_x, forged) = answer_at(h.clock.now_ms(), &impostor, &bob, &offer);
    h.accept(&alice, &forged).await.err(400, ErrorCode::BadMessageSignature);
    assert_eq!(h.call_state(&alice, &id).await, "ringing");
}

async fn cancel_reject_and_roles(h: Harness) {
    let (alice, bob) = two(&h).await;
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    h.post("/call/reject", &bob, json!({ "call_id": id })).await.err(403, ErrorCode::Forbidden);
    h.post("/call/cancel", &alice, json!({ "call_id": id })).await.err(403, ErrorCode::Forbidden);
    let r = h.post("/call/cancel", &bob, json!({ "call_id": id, "reason": "changed my mind" })).await;
    assert_eq!(r.ok(200)["state"], "cancelled");
    h.post("/call/hangup", &alice, json!({ "call_id": id })).await.err(409, ErrorCode::WrongState);
    let (_a, answer) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer).await.err(409, ErrorCode::WrongState);
    let (_c, _o, id2) = h.ring(&bob, &alice).await;
    let r = h.post("/call/reject", &alice, json!({ "call_id": id2, "reason": "x".repeat(129) })).await;
    r.err(400, ErrorCode::InvalidField);
    h.post("/call/reject", &alice, json!({ "call_id": id2 })).await.ok(200);
    assert_eq!(h.call_state(&bob, &id2).await, "rejected");
}

async fn unknown_route_and_method(h: Harness) {
    h.raw("GET", "/nope", vec![], vec![]).await.err(404, ErrorCode::NotFound);
    h.raw("DELETE", "/register", vec![], vec![]).await.err(405, ErrorCode::MethodNotAllowed);
    h.raw("GET", "/health", vec![], vec![]).await.ok(200);
}

async fn users_directory(h: Harness) {
    let (alice, _bob) = two(&h).await;
    for n in ["carol", "dave", "erin"] {
        h.register(&Party::new(n)).await.ok(201);
    }
    let r = h.get("/users?limit=2", &alice).await;
    let names: Vec<&str> =
        r.ok(200)["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(r.json["next"], "bob");
    let r = h.get("/users?after=bob&limit=200", &alice).await;
    let names: Vec<&str> =
        r.ok(200)["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["carol", "dave", "erin"]);
    assert!(r.json["next"].is_null());
    h.get("/users?limit=201", &alice).await.err(400, ErrorCode::InvalidField);
    h.get("/users?after=NOPE", &alice).await.err(400, ErrorCode::InvalidUsername);
}

#[tokio::test]
async fn rate_limits_register_and_initiate() {
    let h = Harness::server_with(|c| {
        c.rate_limits = qvoice_registry::limits::RateLimits {
            register_per_ip: 3,
            register_per_user: 2,
            initiate_per_user: 1,
            ..Default::default()
        }
    })
    .await;
    let (alice, bob) = two(&h).await;
    h.register(&alice).await.ok(200);
    h.register(&alice).await.err(429, ErrorCode::RateLimited); // per user: 2 used
    // New names per address: 2 of 3 used, so one more sign-up, then refused.
    h.register(&Party::new("carol")).await.ok(201);
    h.register(&Party::new("dave")).await.err(429, ErrorCode::RateLimited);
    // An update by an existing user is not charged to the address.
    h.register(&bob).await.ok(200);
    let (_c, offer) = h.offer(&bob, &alice);
    h.initiate(&bob, &offer).await.ok(201);
    h.post("/call/cancel", &bob, json!({ "call_id": offer.call_id.to_hex() })).await.ok(200);
    let (_c, offer) = h.offer(&bob, &alice);
    h.initiate(&bob, &offer).await.err(429, ErrorCode::RateLimited);
    h.status(&bob, &offer.call_id.to_hex()).await.err(404, ErrorCode::UnknownCall);
}

#[tokio::test]
async fn unconfirmed_accept_fails_and_metrics_count_states() {
    let h = Harness::router();
    let (alice, bob) = two(&h).await;
    let (_c, offer, id) = h.ring(&bob, &alice).await;
    let (_a, answer) = h.answer(&alice, &bob, &offer);
    h.accept(&alice, &answer).await.ok(200);
    h.clock.advance(Duration::from_secs(45));
    h.state.sweep();
    assert_eq!(h.call_state(&bob, &id).await, "failed");
    let text = qvoice_registry::metrics::render(&h.state);
    assert!(text.contains("qvoice_registry_users 2\n"), "{text}");
    assert!(text.contains("qvoice_registry_calls{state=\"failed\"} 1\n"), "{text}");
    assert!(text.contains("qvoice_registry_requests_total{route=\"/register\",status=\"201\"} 2\n"), "{text}");
    assert!(text.contains("qvoice_registry_event_streams 0\n"), "{text}");
}

#[tokio::test]
async fn concurrent_first_registrations_of_one_name_have_one_winner() {
    let h = Harness::server().await;
    let contenders: Vec<Party> = (0..8).map(|_| Party::new("contested")).collect();
    let results = futures_util::future::join_all(contenders.iter().map(|p| h.register(p))).await;
    let wins: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.status == 201).map(|(i, _)| i).collect();
    assert_eq!(wins.len(), 1, "{results:?}");
    for r in results.iter().filter(|r| r.status != 201) {
        r.err(409, ErrorCode::UsernameTaken);
    }
    let f = h.raw("GET", "/fetch/contested", vec![], vec![]).await;
    assert_eq!(f.json["identity_key"], b64::encode(contenders[wins[0]].key().as_bytes()));
}
