//! File transfer end to end: a real registry (HTTP, SQLite, blob files) and real `qvoice send` /
//! `qvoice files` / `qvoice receive` processes with their own homes. What reaches the destination folder is
//! compared by SHA-256; what the registry stores is grepped for plaintext and names; tampering is done to
//! the registry's files on disk, as a malicious or broken registry would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use client_common::{BIN, User};
use qvoice_proto::file::{FileMeta, SealParams, seal_manifest};
use qvoice_proto::{IdentitySecret, SignedPrekey, Username, b64};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const MIB: usize = 1 << 20;
const MARKER: &[u8] = b"QVOICE-PLAINTEXT-MARKER-5b7d";

struct Reg {
    running: qvoice_registry::RunningRegistry,
    dir: tempfile::TempDir,
}

impl Reg {
    async fn start(f: impl FnOnce(&mut qvoice_registry::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = qvoice_registry::Config::new(dir.path().join("registry.sqlite3"));
        cfg.bind = "127.0.0.1:0".parse().unwrap();
        f(&mut cfg);
        let running = qvoice_registry::spawn(cfg).await.unwrap();
        Self { running, dir }
    }

    fn url(&self) -> String {
        self.running.url()
    }

    fn blobs(&self) -> PathBuf {
        self.dir.path().join("registry.files").join("blobs")
    }

    fn chunk(&self, id: &str, index: u32) -> PathBuf {
        self.blobs().join(id).join(format!("{index:08}.chunk"))
    }
}

/// Runs `qvoice --home H args` to completion.
async fn run(user: &User, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN).arg("--home").arg(user.home()).args(args).output().await.unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn event<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines.iter().find(|v| v["event"] == name).unwrap_or_else(|| panic!("no {name} event in {lines:#?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A file of `len` seeded random bytes with the plaintext marker every MiB.
fn make_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, [u8; 32]) {
    // xorshift64*: incompressible, reproducible, fast enough unoptimised.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    for at in (0..len.saturating_sub(MARKER.len())).step_by(MIB) {
        data[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, Sha256::digest(&data).into())
}

fn sha_of(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// Every entry in `dir` (names), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// `grep -r` over the registry's whole folder (database, WAL, blobs): true if `needle` occurs.
fn registry_contains(reg: &Reg, needle: &[u8]) -> bool {
    let out = std::process::Command::new("grep")
        .args(["-r", "-a", "-F", "-l", "-e"])
        .arg(std::ffi::OsStr::new(std::str::from_utf8(needle).unwrap()))
        .arg(reg.dir.path())
        .output()
        .unwrap();
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "grep failed: {out:?}");
    out.status.code() == Some(0)
}

async fn send(user: &User, to: &str, path: &Path) -> Output {
    run(user, &["send", to, path.to_str().unwrap(), "--json"]).await
}

async fn incoming(user: &User) -> Vec<Value> {
    let out = run(user, &["files", "--json"]).await;
    assert!(out.status.success(), "files: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["incoming"].as_array().unwrap().clone()
}

async fn receive(user: &User, id: &str, out_dir: &Path) -> Output {
    run(user, &["receive", id, "--out", out_dir.to_str().unwrap(), "--json"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_file_reaches_an_offline_recipient_intact_and_the_registry_holds_only_ciphertext() {
    let reg = Reg::start(|_| {}).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let src = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(src.path(), "holiday-video.mkv", 100 * MIB, 1);

    // Bob is offline: no qvoice process of his runs while alice sends.
    let out = send(&alice, "bob", &path).await;
    assert!(out.status.success(), "send: {}", stderr(&out));
    let lines = json_lines(&out);
    let sent = &event(&lines, "sent")["report"];
    let id = sent["file_id"].as_str().unwrap().to_owned();
    assert_eq!((sent["size"].as_u64(), sent["uploaded_chunks"].as_u64()), (Some(100 * MIB as u64), Some(100)));
    let last = lines.iter().rev().find(|v| v["event"] == "progress").unwrap();
    assert_eq!(last["done"], last["total"]);

    // The registry's storage: no plaintext marker, no file name, anywhere (database, WAL, blobs).
    assert!(!registry_contains(&reg, MARKER), "plaintext marker found in the registry's storage");
    assert!(!registry_contains(&reg, b"holiday-video"), "file name found in the registry's storage");
    let stored: u64 = walk_size(&reg.blobs());
    assert_eq!(stored, 100 * MIB as u64 + 100 * 16, "ciphertext = plaintext + one tag per chunk");

    // Later, bob comes online and looks.
    let list = incoming(&bob).await;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["sender"].as_str(), list[0]["name"].as_str()), (Some("alice"), Some("holiday-video.mkv")));
    assert_eq!(list[0]["trust"], "new", "listing must not pin the sender");
    let dest = tempfile::tempdir().unwrap();
    let out = receive(&bob, &id, dest.path()).await;
    assert!(out.status.success(), "receive: {}", stderr(&out));
    let got = dest.path().join("holiday-video.mkv");
    assert_eq!(sha_of(&got), sha, "received file differs");
    assert_eq!(listing(dest.path()), ["holiday-video.mkv"], "temporary files left behind");
    // Acknowledged: deleted at the registry.
    assert!(incoming(&bob).await.is_empty());
    assert_eq!(walk_size(&reg.blobs()), 0);
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_size(&p) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_killed_at_half_resumes_without_reuploading_stored_chunks() {
    let reg = Reg::start(|_| {}).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let src = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(src.path(), "big.bin", 60 * MIB + 12345, 2);

    let mut p = alice.spawn(&["send", "bob", path.to_str().unwrap()]);
    p.wait_for("progress", Duration::from_secs(60), |v| {
        v["done"].as_u64().unwrap() * 2 >= v["total"].as_u64().unwrap()
    })
    .await;
    // kill -9: no chance to clean up.
    nix_kill9(p.pid());
    let _ = p.exit_code(Duration::from_secs(10)).await;
    let files = reg.running.state.files();
    // A chunk whose body reached the registry before the kill is still being stored: wait until the count
    // holds still (three reads 200 ms apart) before taking it as what the resume must skip.
    let mut counts = Vec::new();
    let stored_at_kill = loop {
        let outgoing = files.list("alice").unwrap().1;
        assert_eq!(outgoing.len(), 1);
        counts.push(outgoing[0].stored_chunks);
        if counts.len() >= 3 && counts[counts.len() - 3..].iter().all(|&c| c == outgoing[0].stored_chunks) {
            break outgoing[0].stored_chunks;
        }
        assert!(counts.len() < 50, "the stored chunk count never settled: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((25..61).contains(&stored_at_kill), "stored {stored_at_kill} of 61 at the kill");

    let out = send(&alice, "bob", &path).await;
    assert!(out.status.success(), "resumed send: {}", stderr(&out));
    let lines = json_lines(&out);
    let r = &event(&lines, "sent")["report"];
    let (uploaded, skipped) = (r["uploaded_chunks"].as_u64().unwrap(), r["skipped_chunks"].as_u64().unwrap());
    assert_eq!(skipped, u64::from(stored_at_kill), "re-uploaded chunks the registry already had");
    assert_eq!(uploaded + skipped, 61);
    assert_eq!(event(&lines, "progress")["resumed"].as_u64().unwrap(), u64::from(stored_at_kill) * MIB as u64);
    assert_eq!(listing(&alice.home().join("data").join("outbox")), Vec::<String>::new(), "resume record not removed");

    let dest = tempfile::tempdir().unwrap();
    let id = r["file_id"].as_str().unwrap();
    let out = receive(&bob, id, dest.path()).await;
    assert!(out.status.success(), "receive: {}", stderr(&out));
    assert_eq!(sha_of(&dest.path().join("big.bin")), sha);
}

fn nix_kill9(pid: u32) {
    let st = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_truncated_or_swapped_chunks_are_refused_and_nothing_is_saved() {
    let reg = Reg::start(|_| {}).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    type Damage = fn(&Reg, &str);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "tampered",
            |r, id| {
                let p = r.chunk(id, 1);
                let mut b = std::fs::read(&p).unwrap();
                b[1000] ^= 0x01;
                std::fs::write(&p, b).unwrap();
            },
            "chunk 1 does not authenticate",
        ),
        (
            "truncated",
            |r, id| {
                let p = r.chunk(id, 2);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 100]).unwrap();
            },
            "chunk 2 has",
        ),
        (
            "swapped",
            |r, id| {
                let (a, b) = (r.chunk(id, 0), r.chunk(id, 1));
                let tmp = a.with_extension("x");
                std::fs::rename(&a, &tmp).unwrap();
                std::fs::rename(&b, &a).unwrap();
                std::fs::rename(&tmp, &b).unwrap();
            },
            "chunk 0 does not authenticate",
        ),
    ];
    for (i, (what, damage, message)) in cases.into_iter().enumerate() {
        let (path, _) = make_file(src.path(), &format!("{what}.bin"), 2 * MIB + 500, 10 + i as u64);
        let out = send(&alice, "bob", &path).await;
        assert!(out.status.success(), "send {what}: {}", stderr(&out));
        let id = event(&json_lines(&out), "sent")["report"]["file_id"].as_str().unwrap().to_owned();
        damage(&reg, &id);
        let out = receive(&bob, &id, dest.path()).await;
        assert_eq!(out.status.code(), Some(6), "{what}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("refused and nothing was saved") && err.contains(message), "{what}: {err}");
        assert!(listing(dest.path()).is_empty(), "{what}: left {:?} in the destination", listing(dest.path()));
        // Refused files are deleted at the registry (the sender is told through file_closed).
        assert!(incoming(&bob).await.is_empty(), "{what}: still listed");
    }

    // An upload that stopped half way is not offered to the recipient at all.
    let (path, _) = make_file(src.path(), "partial.bin", 40 * MIB, 20);
    let mut p = alice.spawn(&["send", "bob", path.to_str().unwrap()]);
    p.wait_for("progress", Duration::from_secs(30), |v| v["done"].as_u64().unwrap() > 0).await;
    nix_kill9(p.pid());
    let _ = p.exit_code(Duration::from_secs(10)).await;
    let partial = reg.running.state.files().list("alice").unwrap().1;
    let partial = partial.iter().find(|f| !f.complete()).expect("an incomplete upload");
    assert!(incoming(&bob).await.is_empty());
    let out = receive(&bob, &partial.file_id.to_hex(), dest.path()).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("still being uploaded"), "{}", stderr(&out));
    assert!(listing(dest.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_cannot_download_and_a_changed_sender_key_blocks_receiving() {
    let reg = Reg::start(|_| {}).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let eve = User::init("eve", &reg.url()).await;
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (path, sha) = make_file(src.path(), "report.pdf", 10_000, 3);
    let out = send(&alice, "bob", &path).await;
    let id = event(&json_lines(&out), "sent")["report"]["file_id"].as_str().unwrap().to_owned();

    let out = receive(&eve, &id, dest.path()).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("403") && stderr(&out).contains("forbidden"), "{}", stderr(&out));
    assert!(incoming(&eve).await.is_empty());
    assert!(listing(dest.path()).is_empty());

    // Bob has pinned another key for alice (as if the registry had swapped keys): receiving is blocked,
    // nothing is downloaded, and the file stays until bob verifies.
    let contacts = bob.home().join("data").join("contacts.json");
    let other = IdentitySecret::from_bytes(&[7; 32]).public();
    let pinned =
        json!({"alice": {"identity_key": b64::encode(other.as_bytes()), "first_seen_ms": 1, "verified": true}});
    std::fs::write(&contacts, serde_json::to_vec(&pinned).unwrap()).unwrap();
    let out = receive(&bob, &id, dest.path()).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("identity key changed") && stderr(&out).contains("qvoice verify alice"));
    assert!(listing(dest.path()).is_empty());
    let list = incoming(&bob).await;
    assert_eq!(list[0]["trust"], "key_changed");
    // Sending to alice is blocked the same way.
    let out = send(&bob, "alice", &path).await;
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));

    let out = run(&bob, &["verify", "alice"]).await;
    assert!(out.status.success());
    let out = receive(&bob, &id, dest.path()).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha_of(&dest.path().join("report.pdf")), sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_and_quota_give_clear_errors() {
    let reg = Reg::start(|c| {
        c.files.max_file_bytes = 3 * MIB as u64;
        c.files.sender_quota_bytes = 4 * MIB as u64;
    })
    .await;
    let alice = User::init("alice", &reg.url()).await;
    User::init("bob", &reg.url()).await;
    let src = tempfile::tempdir().unwrap();
    let (big, _) = make_file(src.path(), "big.bin", 3 * MIB + 1, 4);
    let out = send(&alice, "bob", &big).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("413 file_too_large") && stderr(&out).contains("at most 3145728 bytes per file"));
    let (a, _) = make_file(src.path(), "a.bin", 2 * MIB + 200_000, 5);
    assert!(send(&alice, "bob", &a).await.status.success());
    let (b, _) = make_file(src.path(), "b.bin", 2 * MIB, 6);
    let out = send(&alice, "bob", &b).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("507 quota_exceeded") && stderr(&out).contains("cancel some"), "{}", stderr(&out));
    assert_eq!(reg.running.state.files().totals().unwrap().0, 1, "a refused send stored something");
}

/// Alice's identity from her key file, to act as a hostile client that writes its own manifest.
fn identity_of(user: &User) -> IdentitySecret {
    let kf: Value =
        serde_json::from_slice(&std::fs::read(user.home().join("data").join("keys.json")).unwrap()).unwrap();
    let seed: [u8; 32] = b64::decode(kf["identity"].as_str().unwrap()).unwrap().try_into().unwrap();
    IdentitySecret::from_bytes(&seed)
}

async fn signed(
    client: &reqwest::Client,
    base: &str,
    who: &str,
    id: &IdentitySecret,
    method: reqwest::Method,
    pq: &str,
    body: Vec<u8>,
) -> u16 {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let origin = qvoice_proto::auth::origin_of_url(base).unwrap();
    let sig = qvoice_proto::auth::sign_request(id, &origin, method.as_str(), pq, who, ts, &body);
    let resp = client
        .request(method, format!("{base}{pq}"))
        .header(qvoice_proto::auth::HEADER_USER, who)
        .header(qvoice_proto::auth::HEADER_ORIGIN, &origin)
        .header(qvoice_proto::auth::HEADER_TIMESTAMP, ts.to_string())
        .header(qvoice_proto::auth::HEADER_SIGNATURE, b64::encode(&sig))
        .body(body)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Sends `data` named `name` from `from` to bob with a hand-built manifest (a hostile sender's client).
async fn send_raw(reg: &Reg, from: &User, name: &str, data: &[u8]) -> String {
    let client = reqwest::Client::new();
    let base = reg.url();
    let bundle: Value = client.get(format!("{base}/fetch/bob")).send().await.unwrap().json().await.unwrap();
    let bob_key =
        qvoice_proto::IdentityKey::from_bytes(&b64::decode(bundle["identity_key"].as_str().unwrap()).unwrap()).unwrap();
    let prekey = SignedPrekey::parse(&b64::decode(bundle["prekey"].as_str().unwrap()).unwrap()).unwrap();
    let id = identity_of(from);
    let meta = FileMeta { name: name.to_owned(), sha256: Sha256::digest(data).into() };
    let (sender, recipient) = (Username::parse(&from.name).unwrap(), Username::parse("bob").unwrap());
    let params = SealParams {
        sender: &sender,
        recipient: &recipient,
        recipient_key: &bob_key,
        recipient_prekey: &prekey,
        meta: &meta,
        size: data.len() as u64,
        chunk_size: 1024,
    };
    let (m, keys) = seal_manifest(&mut rand::rng(), 0, &id, &params).unwrap();
    let body = serde_json::to_vec(&json!({ "manifest": b64::encode(m.to_bytes()) })).unwrap();
    assert_eq!(signed(&client, &base, &from.name, &id, reqwest::Method::POST, "/files", body).await, 201);
    let cipher = keys.cipher(&m);
    for (i, part) in data.chunks(1024).enumerate() {
        let mut sealed = Vec::new();
        cipher.seal(i as u32, part, &mut sealed).unwrap();
        let pq = format!("/files/{}/chunks/{i}", m.file_id);
        assert_eq!(signed(&client, &base, &from.name, &id, reqwest::Method::PUT, &pq, sealed).await, 200);
    }
    m.file_id.to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_file_names_are_saved_safely_and_never_overwrite() {
    let reg = Reg::start(|_| {}).await;
    let mallory = User::init("mallory", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("a").join("b");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("x"), b"bob's own file").unwrap();

    let id1 = send_raw(&reg, &mallory, "../../x", b"first").await;
    let id2 = send_raw(&reg, &mallory, "\x1b]0;owned\x07evil\u{202E}txt.exe\n", b"second").await;
    let id3 = send_raw(&reg, &mallory, "..", b"third").await;
    for id in [&id1, &id2, &id3] {
        let out = receive(&bob, id, &dest).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let names = listing(&dest);
    assert_eq!(
        names,
        vec![format!("file-{}", &id3[..8]), "x".into(), "x (1)".into(), "]0;owned".to_owned() + "eviltxt.exe"]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"bob's own file", "an existing file was overwritten");
    assert_eq!(std::fs::read(dest.join("x (1)")).unwrap(), b"first");
    assert_eq!(listing(outer.path()), ["a"], "something was written outside the destination");
    assert_eq!(listing(&outer.path().join("a")), ["b"]);
    for n in &names {
        assert!(!n.chars().any(char::is_control), "control character in {n:?}");
    }
}
