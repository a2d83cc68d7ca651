//! File transfer at the registry: real HTTP server, real signed requests, real manifests and chunks from
//! qvoice-proto, real files on disk. Upload by index with resume, download only by the recipient (403
//! for everyone else), limits with their 413/507 errors, acknowledgement and expiry deleting everything,
//! ciphertext only on disk, and acknowledged chunks surviving `kill -9` of the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../benches/support/proc.rs"]
mod proc;

use std::path::Path;
use std::time::Duration;

use common::{Harness, Party, SseReader};
use qvoice_proto::file::{FileKeys, FileMeta, Manifest, SealParams, StreamOpener, open_manifest, seal_manifest};
use qvoice_proto::{Username, b64};
use qvoice_wire::ErrorCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const CHUNK: u32 = 1024;
const MARKER: &[u8] = b"PLAINTEXT-MARKER-7c1e";
const NAME: &str = "secret-plans.txt";

fn content(len: usize) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(len).collect()
}

struct Sealed {
    manifest: Manifest,
    chunks: Vec<Vec<u8>>,
}

fn seal(from: &Party, to: &Party, data: &[u8], now: u64) -> Sealed {
    let meta = FileMeta { name: NAME.to_owned(), sha256: Sha256::digest(data).into() };
    let (sender, recipient) = (Username::parse(&from.name).unwrap(), Username::parse(&to.name).unwrap());
    let prekey = to.signed_prekey();
    let params = SealParams {
        sender: &sender,
        recipient: &recipient,
        recipient_key: &to.key(),
        recipient_prekey: &prekey,
        meta: &meta,
        size: data.len() as u64,
        chunk_size: CHUNK,
    };
    let (manifest, keys): (Manifest, FileKeys) = seal_manifest(&mut rand::rng(), now, &from.id, &params).unwrap();
    let c = keys.cipher(&manifest);
    let chunks = (0..manifest.chunk_count)
        .map(|i| {
            let start = i as usize * CHUNK as usize;
            let mut out = Vec::new();
            c.seal(i, &data[start..(start + CHUNK as usize).min(data.len())], &mut out).unwrap();
            out
        })
        .collect();
    Sealed { manifest, chunks }
}

async fn create(h: &Harness, who: &Party, m: &Manifest) -> common::Resp {
    h.post("/files", who, json!({ "manifest": b64::encode(m.to_bytes()) })).await
}

async fn put(h: &Harness, who: &Party, id: &str, index: u32, bytes: &[u8]) -> common::Resp {
    let pq = format!("/files/{id}/chunks/{index}");
    let headers = who.auth_headers("PUT", &pq, h.ts(), bytes);
    h.raw("PUT", &pq, headers, bytes.to_vec()).await
}

/// Raw download: (status, body bytes).
async fn get_chunk(h: &Harness, who: &Party, id: &str, index: u32) -> (u16, Vec<u8>) {
    let pq = format!("/files/{id}/chunks/{index}");
    let mut b = reqwest::Client::new().get(format!("{}{pq}", h.base()));
    for (k, v) in who.auth_headers("GET", &pq, h.ts(), b"") {
        b = b.header(k, v);
    }
    let resp = b.send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// Every byte under `dir`, concatenated (files only).
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn upload_resume_download_ack_and_nothing_left() {
    let h = Harness::server().await;
    let (alice, bob, eve) = (Party::new("alice"), Party::new("bob"), Party::new("eve"));
    for p in [&alice, &bob, &eve] {
        h.register(p).await.ok(201);
    }
    let mut bob_events = SseReader::open(h.base(), &bob, h.ts()).await;
    bob_events.until("ready", Duration::from_secs(5)).await;
    let mut alice_events = SseReader::open(h.base(), &alice, h.ts()).await;
    alice_events.until("ready", Duration::from_secs(5)).await;

    let data = content(5 * CHUNK as usize + 100);
    let s = seal(&alice, &bob, &data, common::T0);
    let id = s.manifest.file_id.to_hex();
    let st = create(&h, &alice, &s.manifest).await;
    let st = st.ok(201);
    assert_eq!((st["chunk_count"].as_u64(), st["state"].as_str()), (Some(6), Some("uploading")));
    assert_eq!(st["wire_size"].as_u64(), Some(data.len() as u64 + 6 * 16));

    // Out of order, with a gap: the status says which chunks are stored.
    for i in [0u32, 1, 3] {
        put(&h, &alice, &id, i, &s.chunks[i as usize]).await.ok(200);
    }
    let st = h.get(&format!("/files/{id}"), &alice).await;
    assert_eq!(st.ok(200)["stored"], json!([[0, 1], [3, 3]]));
    // A resuming client sends the manifest again: same file, same ranges (200, not 201).
    let again = create(&h, &alice, &s.manifest).await;
    assert_eq!(again.ok(200)["stored"], json!([[0, 1], [3, 3]]));
    // The same bytes again are fine; other bytes at a stored index are a conflict.
    put(&h, &alice, &id, 3, &s.chunks[3]).await.ok(200);
    put(&h, &alice, &id, 3, &s.chunks[2]).await.err(409, ErrorCode::ChunkConflict);
    // Wrong lengths and indexes.
    put(&h, &alice, &id, 2, &s.chunks[2][..100]).await.err(400, ErrorCode::InvalidChunk);
    put(&h, &alice, &id, 6, &s.chunks[5]).await.err(400, ErrorCode::InvalidChunk);
    put(&h, &alice, &id, 5, &s.chunks[4]).await.err(400, ErrorCode::InvalidChunk);
    // Only the sender uploads; nobody downloads an incomplete file.
    put(&h, &eve, &id, 2, &s.chunks[2]).await.err(403, ErrorCode::Forbidden);
    assert_eq!(get_chunk(&h, &bob, &id, 0).await.0, 409);
    // Bob does not see it in his list before it is complete.
    assert_eq!(h.get("/files", &bob).await.ok(200)["incoming"], json!([]));

    put(&h, &alice, &id, 2, &s.chunks[2]).await.ok(200);
    put(&h, &alice, &id, 4, &s.chunks[4]).await.ok(200);
    let last = put(&h, &alice, &id, 5, &s.chunks[5]).await;
    assert_eq!(last.ok(200)["complete"], json!(true));
    let ev = bob_events.until("incoming_file", Duration::from_secs(5)).await;
    assert_eq!((ev["file_id"].as_str(), ev["sender"].as_str()), (Some(id.as_str()), Some("alice")));
    assert_eq!(ev["size"].as_u64(), Some(data.len() as u64));

    // Nothing readable on disk: no plaintext marker, no file name, anywhere under the registry's folder.
    let disk = all_bytes(h.dir.path());
    assert!(!contains(&disk, MARKER), "plaintext on the registry's disk");
    assert!(!contains(&disk, NAME.as_bytes()), "file name on the registry's disk");

    // Eve: 403 on everything of this file; alice (the sender) cannot download either.
    h.get(&format!("/files/{id}"), &eve).await.err(403, ErrorCode::Forbidden);
    assert_eq!(get_chunk(&h, &eve, &id, 0).await.0, 403);
    assert_eq!(get_chunk(&h, &alice, &id, 0).await.0, 403);
    h.post(&format!("/files/{id}/ack"), &eve, json!({"outcome": "delivered"})).await.err(403, ErrorCode::Forbidden);
    h.req("DELETE", &format!("/files/{id}"), &eve, &Value::Null).await.err(403, ErrorCode::Forbidden);

    // Bob lists, downloads, verifies and decrypts.
    let list = h.get("/files", &bob).await;
    let entry = &list.ok(200)["incoming"][0];
    let manifest = Manifest::parse(&b64::decode(entry["manifest"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(manifest, s.manifest);
    let me = Username::parse("bob").unwrap();
    let (meta, keys) = open_manifest(&manifest, &bob.id, &me, std::slice::from_ref(&bob.prekey)).unwrap();
    assert_eq!(meta.name, NAME);
    let mut opener = StreamOpener::new(keys.cipher(&manifest), &meta);
    let (mut plain, mut buf) = (Vec::new(), Vec::new());
    for i in 0..manifest.chunk_count {
        let (status, bytes) = get_chunk(&h, &bob, &id, i).await;
        assert_eq!(status, 200);
        opener.open_next(&bytes, &mut buf).unwrap();
        plain.extend_from_slice(&buf);
    }
    opener.finish().unwrap();
    assert_eq!(plain, data);

    let acked = h.post(&format!("/files/{id}/ack"), &bob, json!({"outcome": "delivered"})).await;
    assert_eq!(acked.ok(200)["outcome"], "delivered");
    let ev = alice_events.until("file_closed", Duration::from_secs(5)).await;
    assert_eq!((ev["peer"].as_str(), ev["outcome"].as_str()), (Some("bob"), Some("delivered")));
    h.get(&format!("/files/{id}"), &alice).await.err(404, ErrorCode::UnknownFile);
    assert_eq!(get_chunk(&h, &bob, &id, 0).await.0, 404);
    assert_eq!(h.state.files().totals().unwrap(), (0, 0));
    let blobs = h.dir.path().join("registry.files").join("blobs");
    assert_eq!(std::fs::read_dir(blobs).unwrap().count(), 0, "acknowledged file left blobs behind");
}

#[tokio::test]
async fn manifests_that_lie_are_refused_before_anything_is_stored() {
    let h = Harness::server().await;
    let (alice, bob, eve) = (Party::new("alice"), Party::new("bob"), Party::new("eve"));
    for p in [&alice, &bob, &eve] {
        h.register(p).await.ok(201);
    }
    let s = seal(&alice, &bob, &content(10), common::T0);
    // Eve uploads alice's manifest as her own.
    create(&h, &eve, &s.manifest).await.err(403, ErrorCode::Forbidden);
    // A manifest for an unregistered recipient.
    let carol = Party::new("carol");
    create(&h, &alice, &seal(&alice, &carol, &content(10), common::T0).manifest).await.err(404, ErrorCode::UnknownUser);
    // Encrypted to a key that is not bob's registered key (an impostor "bob").
    let fake_bob = Party::new("bob");
    create(&h, &alice, &seal(&alice, &fake_bob, &content(10), common::T0).manifest)
        .await
        .err(400, ErrorCode::InvalidField);
    // A flipped byte: signature.
    let mut raw = s.manifest.to_bytes().to_vec();
    let at = raw.len() - 100;
    raw[at] ^= 1;
    h.post("/files", &alice, json!({ "manifest": b64::encode(&raw) })).await.err(400, ErrorCode::BadMessageSignature);
    h.post("/files", &alice, json!({ "manifest": "AAAA" })).await.err(400, ErrorCode::InvalidField);
    h.post("/files", &alice, json!({ "manifest": "not base64!" })).await.err(400, ErrorCode::InvalidBase64);
    // Unknown ids, bad ids.
    h.get("/files/00000000000000000000000000000000", &alice).await.err(404, ErrorCode::UnknownFile);
    h.get("/files/XYZ", &alice).await.err(400, ErrorCode::InvalidField);
    assert_eq!(h.state.files().totals().unwrap(), (0, 0));
}

#[tokio::test]
async fn size_limit_and_quotas_give_clear_errors() {
    let h = Harness::server_with(|c| {
        c.files.max_file_bytes = 8 * 1024;
        c.files.sender_quota_bytes = 12 * 1024;
        c.files.inbox_quota_bytes = 14 * 1024;
        c.files.max_files_per_sender = 3;
    })
    .await;
    let (alice, bob, carol) = (Party::new("alice"), Party::new("bob"), Party::new("carol"));
    for p in [&alice, &bob, &carol] {
        h.register(p).await.ok(201);
    }
    let too_big = create(&h, &alice, &seal(&alice, &bob, &content(9 * 1024), common::T0).manifest).await;
    too_big.err(413, ErrorCode::FileTooLarge);
    assert!(too_big.json["message"].as_str().unwrap().contains("8192"));
    create(&h, &alice, &seal(&alice, &bob, &content(7 * 1024), common::T0).manifest).await.ok(201);
    let over = create(&h, &alice, &seal(&alice, &bob, &content(6 * 1024), common::T0).manifest).await;
    over.err(507, ErrorCode::QuotaExceeded);
    assert!(over.json["message"].as_str().unwrap().contains("cancel"));
    // Bob's inbox: 7 KiB from alice waiting, carol's 8 KiB does not fit in 14 KiB.
    let full = create(&h, &carol, &seal(&carol, &bob, &content(7 * 1024 + 1), common::T0).manifest).await;
    full.err(507, ErrorCode::InboxFull);
    // The per-sender file count.
    for _ in 0..2 {
        create(&h, &alice, &seal(&alice, &carol, &content(10), common::T0).manifest).await.ok(201);
    }
    create(&h, &alice, &seal(&alice, &carol, &content(10), common::T0).manifest)
        .await
        .err(507, ErrorCode::QuotaExceeded);
    // Oversized chunk bodies are refused by their length before being read.
    let s = seal(&alice, &carol, &content(10), common::T0);
    let big = vec![0u8; (1 << 20) + 17];
    put(&h, &alice, &s.manifest.file_id.to_hex(), 0, &big).await.err(400, ErrorCode::InvalidChunk);
}

#[tokio::test]
async fn unacknowledged_files_expire_and_cancelled_ones_vanish() {
    let h = Harness::server_with(|c| c.files.ttl = Duration::from_secs(3600)).await;
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    h.register(&alice).await.ok(201);
    h.register(&bob).await.ok(201);
    let mut alice_events = SseReader::open(h.base(), &alice, h.ts()).await;
    alice_events.until("ready", Duration::from_secs(5)).await;
    let s = seal(&alice, &bob, &content(100), common::T0);
    let id = s.manifest.file_id.to_hex();
    create(&h, &alice, &s.manifest).await.ok(201);
    put(&h, &alice, &id, 0, &s.chunks[0]).await.ok(200);
    let expires = h.get(&format!("/files/{id}"), &bob).await.ok(200)["expires_ms"].as_u64().unwrap();
    assert_eq!(expires, common::T0 + 3_600_000);
    h.clock.advance(Duration::from_millis(3_599_000));
    assert_eq!(qvoice_registry::http::files::expire(&h.state).await.unwrap(), 0);
    h.clock.advance(Duration::from_millis(1_000));
    assert_eq!(qvoice_registry::http::files::expire(&h.state).await.unwrap(), 1);
    let ev = alice_events.until("file_closed", Duration::from_secs(5)).await;
    assert_eq!(ev["outcome"], "expired");
    h.get(&format!("/files/{id}"), &bob).await.err(404, ErrorCode::UnknownFile);

    let s = seal(&alice, &bob, &content(100), common::T0);
    let id = s.manifest.file_id.to_hex();
    create(&h, &alice, &s.manifest).await.ok(201);
    h.req("DELETE", &format!("/files/{id}"), &bob, &Value::Null).await.err(403, ErrorCode::Forbidden);
    let r = h.req("DELETE", &format!("/files/{id}"), &alice, &Value::Null).await;
    assert_eq!(r.ok(200)["outcome"], "cancelled");
    assert_eq!(h.state.files().totals().unwrap(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_chunks_survive_kill_9_and_crash_leftovers_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reg.sqlite3");
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    let client = reqwest::Client::new();
    let send = |base: String, who: &Party, method: &str, pq: String, body: Vec<u8>| {
        let mut b = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{base}{pq}"));
        for (k, v) in who.auth_headers(method, &pq, proc::now_ms(), &body) {
            b = b.header(k, v);
        }
        async move {
            let r = b.body(body).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let (mut child, base) = proc::start(&db);
    for p in [&alice, &bob] {
        let body = serde_json::to_vec(&p.register_body()).unwrap();
        assert_eq!(send(base.clone(), p, "POST", "/register".into(), body).await.0, 201);
    }
    let data = content(8 * CHUNK as usize);
    let s = seal(&alice, &bob, &data, proc::now_ms());
    let id = s.manifest.file_id.to_hex();
    let body = serde_json::to_vec(&json!({ "manifest": b64::encode(s.manifest.to_bytes()) })).unwrap();
    assert_eq!(send(base.clone(), &alice, "POST", "/files".into(), body).await.0, 201);
    for i in 0..5u32 {
        let (st, _) =
            send(base.clone(), &alice, "PUT", format!("/files/{id}/chunks/{i}"), s.chunks[i as usize].clone()).await;
        assert_eq!(st, 200);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What a crash between a blob write and its row can leave: a temporary blob and a folder without a row.
    let files = dir.path().join("reg.files").join("blobs");
    std::fs::write(files.join(&id).join("00000007.tmp99"), b"partial").unwrap();
    std::fs::create_dir_all(files.join("ffffffffffffffffffffffffffffffff")).unwrap();

    let (child, base) = proc::start(&db);
    let body = serde_json::to_vec(&json!({ "manifest": b64::encode(s.manifest.to_bytes()) })).unwrap();
    let (st, resp) = send(base.clone(), &alice, "POST", "/files".into(), body).await;
    assert_eq!(st, 200);
    let resp: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(resp["stored"], json!([[0, 4]]), "acknowledged chunks lost by kill -9");
    assert!(!files.join(&id).join("00000007.tmp99").exists());
    assert!(!files.join("ffffffffffffffffffffffffffffffff").exists());
    for i in 5..8u32 {
        let (st, _) =
            send(base.clone(), &alice, "PUT", format!("/files/{id}/chunks/{i}"), s.chunks[i as usize].clone()).await;
        assert_eq!(st, 200);
    }
    for i in 0..8u32 {
        let (st, bytes) = send(base.clone(), &bob, "GET", format!("/files/{id}/chunks/{i}"), Vec::new()).await;
        assert_eq!((st, &bytes[..]), (200, &s.chunks[i as usize][..]));
    }
    proc::stop(child);
}
