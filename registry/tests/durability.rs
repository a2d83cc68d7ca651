//! Durability: registrations acknowledged with a 2xx survive `kill -9` of the real server process,
//! and the database passes `PRAGMA integrity_check` afterwards. Also: SIGTERM stops the binary
//! cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../benches/support/proc.rs"]
mod proc;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Party;
use proc::{now_ms, start, start_logging};

async fn register(client: &reqwest::Client, base: &str, p: &Party) -> Result<u16, reqwest::Error> {
    let body = serde_json::to_vec(&p.register_body()).unwrap();
    let mut b = client.post(format!("{base}/register")).body(body.clone());
    for (k, v) in p.auth_headers("POST", "/register", now_ms(), &body) {
        b = b.header(k, v);
    }
    Ok(b.send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_registrations_survive_kill_9() {
    const N: usize = 300;
    const KILL_AFTER: usize = 80;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reg.sqlite3");
    let (mut child, base) = start(&db);

    let parties: Arc<Vec<Party>> = Arc::new((0..N).map(|i| Party::new(&format!("user{i:04}"))).collect());
    let next = Arc::new(Mutex::new(0usize));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(Mutex::new(Some(enough_tx)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (parties, next, acked, enough_tx, base) =
            (parties.clone(), next.clone(), acked.clone(), enough_tx.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n >= N {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                match register(&client, &base, &parties[i]).await {
                    Ok(201) => {
                        let mut a = acked.lock().unwrap();
                        a.push(i);
                        if a.len() >= KILL_AFTER
                            && let Some(tx) = enough_tx.lock().unwrap().take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(other) => panic!("unexpected status {other}"),
                    // The server is gone: requests in flight at the kill fail.
                    Err(_) => {}
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), enough_rx).await.unwrap().unwrap();
    child.kill().unwrap(); // SIGKILL, mid-stream: 8 registrations are in flight.
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER && acked.len() < N, "kill should land mid-stream: {}", acked.len());

    let (mut child, base) = start(&db);
    let client = reqwest::Client::new();
    for &i in &acked {
        let p = &parties[i];
        let r = client.get(format!("{base}/fetch/{}", p.name)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{} was acknowledged but is gone", p.name);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["identity_key"], qvoice_proto::b64::encode(p.key().as_bytes()));
    }
    // The restarted server is fully writable too.
    let late = Party::new("late");
    assert_eq!(register(&client, &base, &late).await.unwrap(), 201);

    // SIGTERM: graceful exit with status 0.
    // The workspace forbids `unsafe`, so the signal goes through kill(1) rather than libc.
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "registry exited with {status:?} on SIGTERM");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let count: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert!(usize::try_from(count).unwrap() > acked.len());
    assert_eq!(qvoice_registry::store::schema_version(&db).unwrap(), 3);
}

#[test]
fn migrations_are_versioned_and_refuse_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.sqlite3");
    // A version-1 database (before last_seen) is upgraded in place, keeping its rows.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE users (username TEXT PRIMARY KEY NOT NULL,
                identity_key BLOB NOT NULL CHECK (length(identity_key) = 32), prekey BLOB NOT NULL,
                display_name TEXT, media_port INTEGER, registered_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL) STRICT;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let p = Party::new("old");
        conn.execute(
            "INSERT INTO users VALUES ('old', ?1, ?2, NULL, NULL, 1, 1)",
            rusqlite::params![p.key().as_bytes().as_slice(), p.signed_prekey().to_bytes()],
        )
        .unwrap();
    }
    let store = qvoice_registry::store::Store::open(&db).unwrap();
    assert!(store.get("old").is_some());
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);
    assert_eq!(qvoice_registry::store::schema_version(&db).unwrap(), 3);
    rusqlite::Connection::open(&db).unwrap().execute_batch("PRAGMA user_version = 99;").unwrap();
    let err = qvoice_registry::store::Store::open(&db).unwrap_err();
    assert!(format!("{err:#}").contains("newer"), "{err:#}");
}

#[tokio::test]
async fn binary_reads_its_toml_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    let db = dir.path().join("from-config.sqlite3");
    std::fs::write(
        &cfg,
        format!(
            "bind = \"127.0.0.1:0\"\ndb = {:?}\nringing_timeout_secs = 5\npublic_urls = [\"http://registry.test\"]\n[rate_limits]\nregister_per_ip = 1\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qvoice-registry"))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = format!("http://{}", line.trim().strip_prefix("listening on ").unwrap());
    let client = reqwest::Client::new();
    assert_eq!(register(&client, &base, &Party::new("first")).await.unwrap(), 201);
    assert_eq!(register(&client, &base, &Party::new("second")).await.unwrap(), 429);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(qvoice_registry::store::file_has_user(&db, "first").unwrap());
    assert!(!qvoice_registry::store::file_has_user(&db, "second").unwrap());
}

#[tokio::test]
async fn debug_logs_never_contain_keys_signatures_or_handshake_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_logging(&dir.path().join("logs.sqlite3"), "trace", Stdio::piped());
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());

    let client = reqwest::Client::new();
    let (alice, bob) = (Party::new("alice"), Party::new("bob"));
    assert_eq!(register(&client, &base, &alice).await.unwrap(), 201);
    assert_eq!(register(&client, &base, &bob).await.unwrap(), 201);
    let (_c, offer) = common::offer_at(now_ms(), &bob, &alice);
    let offer_b64 = qvoice_proto::b64::encode(offer.to_bytes());
    let body = serde_json::to_vec(&serde_json::json!({ "offer": offer_b64 })).unwrap();
    let hdrs = bob.auth_headers("POST", "/call/initiate", now_ms(), &body);
    let mut b = client.post(format!("{base}/call/initiate")).body(body.clone());
    for (k, v) in &hdrs {
        b = b.header(k, v);
    }
    assert_eq!(b.send().await.unwrap().status(), 201);
    // A failing request too (bad signature) so error paths are logged.
    let mut b = client.post(format!("{base}/call/initiate")).body(body);
    for (k, v) in alice.auth_headers("POST", "/call/initiate", now_ms(), b"x") {
        b = b.header(k, v);
    }
    assert_eq!(b.send().await.unwrap().status(), 401);
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    assert!(log.contains("call initiated"), "expected request logs at trace level:\n{log}");
    let b64 = qvoice_proto::b64::encode;
    let secrets = [
        b64(alice.key().as_bytes()),
        b64(bob.key().as_bytes()),
        b64(&alice.signed_prekey().to_bytes())[..40].to_owned(),
        offer_b64[..40].to_owned(),
        hdrs[2].1.clone(),
    ];
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "log leaks {s}");
    }
}
