//! The first-run and everyday CLI against a real registry and the real `qvoice` binary: `init` is atomic (a
//! failed init leaves nothing that blocks the retry), usage and config mistakes exit 2 with a message naming
//! the flag or key, calling yourself is refused, `--record-dir` records the call, and a microphone that cannot
//! be opened is reported before anything is dialled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;

use client_common::{BIN, LONG, Registry, SHORT, User};

/// Runs `qvoice --home HOME ARGS` to completion.
async fn qvoice(home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN).arg("--home").arg(home).args(args).output().await.unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Every file and folder under `dir`, relative.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_the_registry_down_writes_nothing_and_the_retry_needs_no_force() {
    let mut reg = Registry::start(SHORT).await;
    let url = reg.url();
    reg.stop().await;
    let home = tempfile::tempdir().unwrap();
    let out = qvoice(home.path(), &["init", "--username", "alice", "--registry", &url]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was written"), "{}", stderr(&out));
    assert_eq!(listing(home.path()), Vec::<String>::new(), "a failed init left files behind");

    reg.restart().await;
    let out = qvoice(home.path(), &["init", "--username", "alice", "--registry", &url]).await;
    assert!(out.status.success(), "retry without --force failed: {}", stderr(&out));
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.contains("username = \"alice\""), "{config}");
    // Owner-only: the key file and config 0600, the data folder 0700.
    assert_eq!(mode(&home.path().join("data/keys.json")), 0o600);
    assert_eq!(mode(&home.path().join("config.toml")), 0o600);
    assert_eq!(mode(&home.path().join("data")), 0o700);
    let out = qvoice(home.path(), &["whoami"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_a_taken_name_changes_nothing_and_another_name_works() {
    let mut reg = Registry::start(SHORT).await;
    let _alice = User::init("alice", &reg.url()).await;
    let home = tempfile::tempdir().unwrap();
    // A config written by hand before init survives a refused init unchanged (its wrong URL is what init
    // is there to fix, so it does not stop init).
    let before = "[registry]\nurl = \"localhost:5001\"\n[audio]\ncodec = \"pcm\"\n";
    std::fs::write(home.path().join("config.toml"), before).unwrap();
    let out = qvoice(home.path(), &["init", "--username", "alice", "--registry", &reg.url()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("already registered") && err.contains("pick another --username"), "{err}");
    assert_eq!(std::fs::read_to_string(home.path().join("config.toml")).unwrap(), before);
    assert_eq!(listing(home.path()), vec!["config.toml".to_owned()], "a refused init left files behind");

    let out = qvoice(home.path(), &["init", "--username", "alicia", "--registry", &reg.url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    assert!(config.contains("username = \"alicia\"") && config.contains("codec = \"pcm\""), "{config}");
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_config_mistakes_exit_2_naming_what_to_fix() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = qvoice(h, &["init", "--username", "Alice!", "--registry", "http://127.0.0.1:5001"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a valid username"), "{}", stderr(&out));

    let out = qvoice(h, &["init", "--username", "alice", "--registry", "127.0.0.1:5001"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean http://127.0.0.1:5001?"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("builder error"), "{}", stderr(&out));
    assert_eq!(listing(h), Vec::<String>::new());

    let out = qvoice(h, &["call", "--no-such-flag"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The TUI's options before another command: refused, saying where they go.
    let out = qvoice(h, &["--input", "x.wav", "call", "bob"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("put them after the command"), "{}", stderr(&out));

    let out = qvoice(h, &["call", "bob", "--input", "/no/such/speech.wav"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));

    std::fs::write(h.join("config.toml"), "[audio]\nframe_ms = 25\n").unwrap();
    let out = qvoice(h, &["whoami"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[audio] frame_ms = 25") && stderr(&out).contains("10, 20, 40 or 60"));
    std::fs::write(h.join("config.toml"), "[audio]\ncodec = \"mp3\"\n").unwrap();
    let out = qvoice(h, &["call", "bob"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[audio] codec = \"mp3\""), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_yourself_is_refused_and_whoami_has_no_safety_number_with_yourself() {
    let mut reg = Registry::start(SHORT).await;
    let alice = User::init("alice", &reg.url()).await;
    let out = qvoice(alice.home(), &["call", "alice", "--input", "silence", "--output", "null"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("you cannot call yourself"), "{}", stderr(&out));
    let out = qvoice(alice.home(), &["call", "Bob!", "--input", "silence", "--output", "null"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A contact book that holds our own name (an older version let a call to ourselves pin it) and bob.
    let data = alice.home().join("data");
    let own = qvoice::session::store::Keystore::load(&data).unwrap().identity.public();
    let mut book = qvoice::session::store::ContactBook::load(&data).unwrap();
    book.check("alice", &own, 1).unwrap();
    book.check("bob", &own, 1).unwrap();
    let out = qvoice(alice.home(), &["whoami"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("with alice") && text.contains("with bob"), "{text}");
    // A --codec that cannot run the configured frame duration is a usage error, before dialling.
    let config = alice.home().join("config.toml");
    let mut cfg = qvoice::config::Config::load(&config).unwrap();
    cfg.audio.frame_ms = 60;
    cfg.save(&config).unwrap();
    let out = qvoice(alice.home(), &["call", "bob", "--codec", "pcm", "--input", "silence", "--output", "null"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("frame_ms = 60") && stderr(&out).contains("10, 20 or 40"), "{}", stderr(&out));
    let out = qvoice(alice.home(), &["call", "bob", "--codec", "mp3"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_microphone_that_cannot_open_is_reported_before_dialling() {
    let mut reg = Registry::start(SHORT).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let mut b = bob.listen(&[]).await;
    let out =
        qvoice(alice.home(), &["call", "bob", "--input", "qvoice-test-no-such-device", "--output", "null", "--json"])
            .await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("microphone") && err.contains("--input FILE.wav") && err.contains("[audio]"), "{err}");
    assert!(!err.contains("AudioIn"), "type names leak: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("dialing"), "it dialled first: {stdout}");
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((line["event"].as_str(), line["exit_code"].as_u64()), (Some("error"), Some(5)), "{line}");
    // bob never rang: a call that starts now reaches him as the first one.
    let carol = User::init("carol", &reg.url()).await;
    let mut c = carol.call("bob", &["--duration", "0.5"]);
    let first = b.wait("incoming_call", SHORT).await;
    assert_eq!(first["from"], "carol", "bob was rung by someone else first: {first}");
    b.send_line("reject").await;
    c.exit_code(SHORT).await;
    let _ = b.child.start_kill();
    reg.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_dir_records_the_call_into_a_new_folder_and_says_where() {
    let mut reg = Registry::start(SHORT).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let rec = tempfile::tempdir().unwrap();
    let rec_dir = rec.path().join("not-yet-created");
    let speech = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/assets/speech16k.wav");
    // bob records through his config file, alice with the flag.
    let bob_rec = rec.path().join("bob-recordings");
    let bob_config = bob.home().join("config.toml");
    let mut cfg = qvoice::config::Config::load(&bob_config).unwrap();
    cfg.recording.dir = Some(bob_rec.clone());
    cfg.recording.enabled = true;
    cfg.save(&bob_config).unwrap();
    let mut b = bob.spawn(&["listen", "--auto-answer", "--once", "--input", "silence", "--output", "null"]);
    b.wait_for("connection", SHORT, |v| v["connected"] == true).await;
    let mut a = alice.spawn(&[
        "call",
        "bob",
        "--duration",
        "3",
        "--input",
        speech,
        "--output",
        "null",
        "--record-dir",
        rec_dir.to_str().unwrap(),
    ]);
    let ev = a.wait_for("recording", LONG, |v| v["on"] == true).await;
    let call_dir = std::path::PathBuf::from(ev["dir"].as_str().unwrap());
    assert!(call_dir.starts_with(&rec_dir), "{ev}");
    assert_eq!(a.exit_code(LONG).await, 0, "the recorded call failed");
    assert_eq!(b.exit_code(LONG).await, 0);
    assert_eq!(mode(&call_dir), 0o700);
    for name in ["sent.wav", "received.wav"] {
        assert_eq!(mode(&call_dir.join(name)), 0o600, "{name}");
    }
    // What alice sent is her speech clip: the recording is not silent.
    let mut r = hound::WavReader::open(call_dir.join("sent.wav")).unwrap();
    let peak = r.samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 1000, "sent.wav is silent (peak {peak})");
    assert!(hound::WavReader::open(call_dir.join("received.wav")).is_ok());
    // bob's recording, from his config: what he received is alice's speech.
    let ev = b.seen.iter().find(|v| v["event"] == "recording" && v["on"] == true).expect("bob: no recording event");
    let bob_call = std::path::PathBuf::from(ev["dir"].as_str().unwrap());
    assert!(bob_call.starts_with(&bob_rec), "{ev}");
    let mut r = hound::WavReader::open(bob_call.join("received.wav")).unwrap();
    let peak = r.samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 1000, "bob's received.wav is silent (peak {peak})");
    reg.stop().await;
}
