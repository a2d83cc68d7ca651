//! `GET /turn/credentials`: STUN servers and coturn TURN REST credentials for authenticated users only,
//! and the registry's own STUN Binding responder over a real UDP socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, Party, T0};
use qvoice_registry::turn::{MediaServers, turn_password};
use qvoice_wire::ErrorCode;
use serde_json::json;

fn with_relay(c: &mut qvoice_registry::Config) {
    c.media_servers = MediaServers {
        stun: vec!["198.51.100.1:3478".into()],
        turn: vec!["198.51.100.1:3478".into()],
        turn_secret: Some("lab-secret".into()),
        turn_ttl: Duration::from_secs(600),
    };
}

#[tokio::test]
async fn credentials_follow_the_turn_rest_api_and_need_a_signed_request() {
    let h = Harness::router_with(with_relay);
    let alice = Party::new("alice");
    h.register(&alice).await.ok(201);
    let r = h.get("/turn/credentials", &alice).await;
    let body = r.ok(200).clone();
    assert_eq!(body["stun"], json!(["198.51.100.1:3478"]));
    let turn = &body["turn"][0];
    let expiry = T0 / 1000 + 600;
    assert_eq!(turn["server"], "198.51.100.1:3478");
    assert_eq!(turn["username"], format!("{expiry}:alice"));
    assert_eq!(turn["password"], turn_password("lab-secret", &format!("{expiry}:alice")));
    assert_eq!(turn["expires_ms"], expiry * 1000);
    // Unregistered signers get nothing.
    let mallory = Party::new("mallory");
    h.get("/turn/credentials", &mallory).await.err(401, ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn without_a_secret_no_relay_is_advertised() {
    let h = Harness::router_with(|c| {
        with_relay(c);
        c.media_servers.turn_secret = None;
    });
    let bob = Party::new("bob");
    h.register(&bob).await.ok(201);
    let body = h.get("/turn/credentials", &bob).await.ok(200).clone();
    assert_eq!(body["turn"], json!([]));
    assert_eq!(body["stun"], json!(["198.51.100.1:3478"]));
}

#[tokio::test]
async fn the_stun_responder_returns_the_mapped_address() {
    use stun_proto::types::attribute::XorMappedAddress;
    use stun_proto::types::message::{BINDING, Message, MessageWriteVec};
    use stun_proto::types::prelude::*;
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(qvoice_registry::turn::serve_stun(server));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage first: ignored, the responder keeps serving.
    client.send_to(b"not stun", addr).await.unwrap();
    let req = Message::builder_request(BINDING, MessageWriteVec::new());
    let txid = req.transaction_id();
    client.send_to(&req.finish(), addr).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await.unwrap().unwrap();
    let resp = Message::from_bytes(&buf[..n]).unwrap();
    assert_eq!(resp.transaction_id(), txid);
    let mapped = resp.attribute::<XorMappedAddress>().unwrap().addr(txid);
    assert_eq!(mapped, client.local_addr().unwrap());
    task.abort();
}
