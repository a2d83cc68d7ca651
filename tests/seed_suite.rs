//! The seed design's test suite (`test_voice_call.py`: registry connectivity, user registration, call
//! workflow, audio configuration, cryptography), by name, against the real components.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::time::Duration;

use client_common::{BIN, Registry, SHORT, User, alice_and_bob};

fn qvoice(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN).arg("--home").arg(home).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_1_registry_connectivity() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let health: serde_json::Value = reqwest::get(format!("{}/health", reg.url())).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    // A registry that is not there: a clear message and exit code 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let home = tempfile::tempdir().unwrap();
    let out = qvoice(home.path(), &["init", "--username", "alice", "--registry", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the registry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_2_user_registration() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let whoami = String::from_utf8(qvoice(alice.home(), &["whoami"]).stdout).unwrap();
    assert!(whoami.contains("username  alice"), "{whoami}");
    // The registry serves the identity key that is in alice's key file.
    let fetched: serde_json::Value =
        reqwest::get(format!("{}/fetch/alice", reg.url())).await.unwrap().json().await.unwrap();
    let ks = qvoice::session::store::Keystore::load(&alice.home().join("data")).unwrap();
    assert_eq!(fetched["identity_key"], qvoice_proto::b64::encode(ks.identity.public().as_bytes()));
    // Keys are never overwritten silently, and a name belongs to its first key.
    let again = qvoice(alice.home(), &["init", "--username", "alice", "--registry", &reg.url()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    let other = tempfile::tempdir().unwrap();
    let taken = qvoice(other.path(), &["init", "--username", "alice", "--registry", &reg.url()]);
    assert!(!taken.status.success());
    assert!(String::from_utf8_lossy(&taken.stderr).contains("username_taken"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(alice.home().join("data/keys.json")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_3_call_workflow() {
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--duration", "1"]);
    for ev in ["dialing", "ringing", "sas_ready", "active", "audio_flowing"] {
        a.wait(ev, SHORT).await;
    }
    for ev in ["incoming_call", "sas_ready", "active", "audio_flowing"] {
        b.wait(ev, SHORT).await;
    }
    assert_eq!(a.exit_code(SHORT).await, 0);
    assert_eq!(b.exit_code(SHORT).await, 0);
    let (ma, mb) = (a.last_metrics().unwrap(), b.last_metrics().unwrap());
    assert!(ma["frames_received"].as_u64().unwrap() > 20 && mb["frames_received"].as_u64().unwrap() > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_4_audio_configuration() {
    let example: qvoice::config::Config = toml::from_str(include_str!("../config.example.toml")).unwrap();
    assert_eq!((example.audio.codec.as_str(), example.audio.frame_ms), ("opus", 20));
    let (_reg, alice, bob) = alice_and_bob(Duration::from_secs(45)).await;
    // The caller's codec preference is negotiated: the seed's raw PCM.
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.call("bob", &["--codec", "pcm", "--duration", "0.5"]);
    assert_eq!(a.wait("active", SHORT).await["codec"], "pcm");
    assert_eq!(b.wait("active", SHORT).await["codec"], "pcm");
    assert_eq!(a.exit_code(SHORT).await, 0);
    assert_eq!(b.exit_code(SHORT).await, 0);
    // The default device: works where there is a sound card, else a clear refusal before dialling (exit 5)
    // that names the flags and config keys to use instead.
    let mut b = bob.listen(&["--auto-answer", "--once"]).await;
    let mut a = alice.spawn(&["call", "bob", "--duration", "0.5", "--input", "default", "--output", "default"]);
    let code = a.exit_code(SHORT).await;
    let sound_card =
        qvoice::media::CpalSource::probe(None, 960).is_ok() && qvoice::media::CpalSink::probe(None, 960).is_ok();
    if sound_card {
        assert_eq!(code, 0);
        let _ = b.exit_code(SHORT).await;
    } else {
        assert_eq!(code, 5);
        assert!(a.seen.iter().all(|v| v["event"] != "dialing"), "dialled before refusing: {:?}", a.seen);
        let err = a.seen.iter().find(|v| v["event"] == "error").unwrap();
        let message = err["message"].as_str().unwrap();
        assert!(message.contains("--input FILE.wav") && message.contains("[audio]"), "{err}");
        assert!(!message.contains("AudioIn"), "{err}");
        // bob was never rung.
        let _ = b.child.start_kill();
    }
}

#[test]
fn test_5_cryptography() {
    use qvoice_proto::{
        Callee, CalleeParams, Caller, CallerParams, Codec, FrameType, IdentitySecret, PrekeySecret, Username,
    };
    let mut rng = rand::rng();
    let (a, b) = (IdentitySecret::generate(&mut rng), IdentitySecret::generate(&mut rng));
    let prekey = PrekeySecret::generate(&mut rng, 1);
    let now = 1_800_000_000_000;
    let signed = prekey.sign(&b, now + qvoice_proto::PREKEY_LIFETIME_MS);
    let (alice, bob) = (Username::parse("alice").unwrap(), Username::parse("bob").unwrap());
    let params = CallerParams {
        caller: alice,
        callee: bob.clone(),
        codecs: vec![Codec::Opus.into()],
        frame_ms: 20,
        candidates: vec![],
        obfuscation: true,
    };
    let (caller, offer) = Caller::start(&mut rng, now, &a, params, &b.public(), &signed).unwrap();
    let cp = CalleeParams { callee: bob, codecs: vec![Codec::Opus.into()], candidates: vec![], obfuscation: true };
    let (callee, answer) = Callee::on_offer(&mut rng, now, &b, &a.public(), &offer, cp).unwrap();
    let (reveal, mut ck) = caller.on_answer(&mut rng, &answer).unwrap();
    let mut sk = callee.on_reveal(&reveal, &[prekey]).unwrap();
    assert_eq!(ck.sas, sk.sas);
    // The seed's per-frame pipeline: obfuscate, AES-256-GCM, and back; tampering is detected.
    let frame = vec![7u8; 2048];
    let (mut wire, mut out) = ([0u8; 4096], [0u8; 4096]);
    let n = ck.media.seal(FrameType::Audio, &frame, &mut wire).unwrap();
    assert_ne!(&wire[14..14 + 2048], &frame[..], "ciphertext differs from plaintext");
    let mut tampered = wire;
    tampered[100] ^= 1;
    assert!(sk.media.open(&tampered[..n], &mut out).is_err());
    assert_eq!(sk.media.open(&wire[..n], &mut out).unwrap().payload, &frame[..]);
    assert!(sk.media.open(&wire[..n], &mut out).is_err(), "a replayed frame is refused");
}
