//! Drives two real `qvoice` TUIs in tmux as a person would: send-keys to dial and accept, capture-pane to
//! read the screens. Both must show ACTIVE with the same SAS, then ENDED after a hang-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use std::process::Command;
use std::time::{Duration, Instant};

use client_common::{BIN, Registry, User};

struct Pane {
    session: String,
}

impl Pane {
    fn start(session: &str, user: &User) -> Self {
        Self::start_with(session, user, "silence", None)
    }

    /// Starts a TUI whose microphone is `input` (no sound card here; the speaker discards), recording
    /// into `record_dir` when given.
    fn start_with(session: &str, user: &User, input: &str, record_dir: Option<&std::path::Path>) -> Self {
        Self::start_env(session, user, input, record_dir, "")
    }

    /// As [`Pane::start_with`], with `env` (`NAME=value ...`) set for the TUI.
    fn start_env(session: &str, user: &User, input: &str, record_dir: Option<&std::path::Path>, env: &str) -> Self {
        let cfg = user.home().join("config.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let mut text = text
            .replace("input = \"default\"", &format!("input = {input:?}"))
            .replace("output = \"default\"", "output = \"null\"");
        assert!(text.contains(&format!("input = {input:?}")), "unexpected config layout:\n{text}");
        if let Some(dir) = record_dir {
            assert!(text.contains("[recording]\n"), "unexpected config layout:\n{text}");
            text = text.replace("[recording]\n", &format!("[recording]\ndir = {:?}\n", dir.display().to_string()));
        }
        std::fs::write(&cfg, text).unwrap();
        let cmd = format!("env {env} {BIN} --home {} tui", user.home().display());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", session, "-x", "80", "-y", "24", &cmd])
            .status()
            .expect("tmux must be installed (apt-get install tmux; .ci/run does)");
        assert!(ok.success());
        Self { session: session.to_owned() }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        assert!(Command::new("tmux").args(["send-keys", "-t", &self.session, keys]).status().unwrap().success());
    }

    /// Waits until the screen satisfies `pred`, reading it like a person would.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{}: no {what} on screen:\n{s}", self.session);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux").args(["has-session", "-t", &self.session]).status().is_ok_and(|s| s.success())
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}

fn sas(screen: &str) -> String {
    let at = screen.find("SAS ").unwrap_or_else(|| panic!("no SAS on screen:\n{screen}"));
    screen[at + 4..at + 8].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tuis_dial_accept_same_sas_and_hang_up() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let tag = std::process::id();
    let b = Pane::start(&format!("qv-bob-{tag}"), &bob);
    b.wait_for("online status", |s| s.contains("online") && s.contains("alice"));
    let a = Pane::start(&format!("qv-alice-{tag}"), &alice);
    a.wait_for("bob in contacts", |s| s.contains("bob"));

    a.keys("d");
    b.wait_for("incoming call", |s| s.contains("alice") && s.to_lowercase().contains("incoming"));
    b.keys("a");
    let sa = a.wait_for("ACTIVE with SAS", |s| s.contains("ACTIVE") && s.contains("SAS "));
    let sb = b.wait_for("ACTIVE with SAS", |s| s.contains("ACTIVE") && s.contains("SAS "));
    assert_eq!(sas(&sa), sas(&sb), "alice:\n{sa}\nbob:\n{sb}");
    // Media flows: frame counters on the gauges move.
    a.wait_for("received frames", |s| s.contains("frames ↑") && !s.contains("↓0 "));

    a.keys("h");
    a.wait_for("ENDED", |s| s.contains("ENDED"));
    b.wait_for("ENDED", |s| s.contains("ENDED"));
    for p in [&a, &b] {
        p.keys("q");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (a.alive() || b.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!a.alive() && !b.alive(), "both TUIs quit on q");
    // A normal hang-up is posted once: neither log has the registry's 409 for a second one.
    for u in [&alice, &bob] {
        let logs = log_files(u.home());
        assert!(!logs.is_empty(), "no *.log under {}", u.home().display());
        for l in logs {
            let text = std::fs::read_to_string(&l).unwrap_or_default();
            assert!(!text.contains("wrong_state"), "{}:\n{text}", l.display());
            assert!(text.contains("call ended"), "the call's end is logged at info in {}:\n{text}", l.display());
        }
    }
}

/// Log files anywhere under a user's home.
fn log_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(log_files(&p));
        } else if p.extension().is_some_and(|x| x == "log") {
            out.push(p);
        }
    }
    out
}

/// RMS of a 16-bit WAV file's samples.
fn wav_rms(path: &std::path::Path) -> (f64, usize) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    let n = samples.len().max(1);
    ((samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n as f64).sqrt(), samples.len())
}

/// `R` records the call in progress (not "from the next call"): both WAV files carry the speech.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_records_the_current_call_into_two_non_silent_wavs() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let speech = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/assets/speech16k.wav");
    let speech = speech.to_str().unwrap();
    let rec = tempfile::tempdir().unwrap();
    let tag = std::process::id();
    let b = Pane::start_with(&format!("qv-rec-bob-{tag}"), &bob, speech, None);
    b.wait_for("online status", |s| s.contains("online") && s.contains("alice"));
    let a = Pane::start_with(&format!("qv-rec-alice-{tag}"), &alice, speech, Some(rec.path()));
    a.wait_for("bob in contacts", |s| s.contains("bob") && s.contains("online"));
    assert!(!a.screen().contains("REC"), "no REC before any recording");

    a.keys("d");
    b.wait_for("incoming call", |s| s.to_lowercase().contains("incoming"));
    b.keys("Enter");
    a.wait_for("ACTIVE", |s| s.contains("ACTIVE"));
    b.wait_for("ACTIVE", |s| s.contains("ACTIVE"));
    a.keys("R");
    let s = a.wait_for("REC and the file paths", |s| s.contains("● REC") && s.contains("sent.wav"));
    assert!(s.contains("online"), "the header keeps its online state while recording:\n{s}");
    // Let two seconds of the call reach both files (waiting on the files, not on a clock).
    let call_dir = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dirs: Vec<_> = std::fs::read_dir(rec.path()).unwrap().map(|e| e.unwrap().path()).collect();
            let grown = dirs.iter().find(|d| {
                ["sent.wav", "received.wav"]
                    .iter()
                    .all(|f| std::fs::metadata(d.join(f)).is_ok_and(|m| m.len() > 48_000 * 2 * 2))
            });
            if let Some(d) = grown {
                break d.clone();
            }
            assert!(Instant::now() < deadline, "recordings did not grow: {dirs:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    a.keys("h");
    a.wait_for("ENDED", |s| s.contains("ENDED"));
    b.wait_for("ENDED", |s| s.contains("ENDED"));
    let s = a.screen();
    assert!(!s.contains("● REC"), "REC goes with the call:\n{s}");
    for f in ["sent.wav", "received.wav"] {
        let (rms, n) = wav_rms(&call_dir.join(f));
        assert!(n >= 96_000, "{f}: only {n} samples");
        assert!(rms > 100.0, "{f} is silent (RMS {rms:.1} over {n} samples)");
    }
    for p in [&a, &b] {
        p.keys("q");
    }
}

/// History survives a restart, and the TUI opens while the registry is down: `○ offline`, the pinned
/// contacts and the saved history from disk, then `● online` by itself once the registry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_offline_with_history_from_disk_and_connects_later() {
    let mut reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let tag = std::process::id();
    let b = Pane::start(&format!("qv-off-bob-{tag}"), &bob);
    b.wait_for("online status", |s| s.contains("● online"));
    let a = Pane::start(&format!("qv-off-alice-{tag}"), &alice);
    a.wait_for("bob online", |s| s.contains("● bob"));
    a.keys("d");
    b.wait_for("incoming call", |s| s.to_lowercase().contains("incoming"));
    b.keys("h");
    a.wait_for("declined attempt in history", |s| s.contains("↗ bob") && s.contains("declined"));
    a.keys("q");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!a.alive(), "alice quit");
    drop(a);

    reg.stop().await;
    let a = Pane::start(&format!("qv-off-alice2-{tag}"), &alice);
    let s = a.wait_for("offline start", |s| s.contains("○ offline") && s.contains("declined"));
    assert!(s.contains("○ bob"), "pinned contact shown from disk:\n{s}");
    assert!(!s.contains("d  dial"), "no dial hint while offline:\n{s}");
    reg.restart().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = a.screen();
        if s.contains("● online") {
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected:\n{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.keys("q");
    b.keys("q");
}

/// Someone who registers while the TUI is open shows up without a restart (then online with presence), and
/// `c` calls any username.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_registration_appears_live_and_c_calls_any_name() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let tag = std::process::id();
    let a = Pane::start(&format!("qv-live-alice-{tag}"), &alice);
    let s = a.wait_for("online", |s| s.contains("● online"));
    assert!(s.contains("Contacts 0/0"), "{s}");
    let carol = User::init("carol", &reg.url()).await;
    // Listed as soon as the name is registered (the registry's user_registered event), offline for now.
    a.wait_for("carol listed on registration", |s| s.contains("○ carol"));
    let c = Pane::start(&format!("qv-live-carol-{tag}"), &carol);
    c.wait_for("online", |s| s.contains("● online"));
    a.wait_for("carol listed live", |s| s.contains("● carol"));
    a.keys("c");
    a.wait_for("dial prompt", |s| s.contains("Call a username"));
    a.keys("carol");
    a.keys("Enter");
    c.wait_for("incoming call from alice", |s| s.to_lowercase().contains("incoming") && s.contains("alice"));
    c.keys("r");
    a.wait_for("declined", |s| s.contains("declined"));
    a.keys("q");
    c.keys("q");
}

/// No sound card: the TUI says so before dialling (header, banner with the config keys), refuses to dial,
/// and the device picker offers what works here (the bundled clip as microphone); picking it clears the
/// warning and the call rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sound_card_is_said_before_dialling_and_the_picker_offers_the_clip() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let tag = std::process::id();
    let b = Pane::start(&format!("qv-nocard-bob-{tag}"), &bob);
    b.wait_for("online", |s| s.contains("● online"));
    // The default microphone, with any sound server out of reach (a machine with neither card nor server).
    let env = "PULSE_SERVER=unix:/nonexistent/qvoice-test JACK_NO_START_SERVER=1";
    let a = Pane::start_env(&format!("qv-nocard-alice-{tag}"), &alice, "default", None, env);
    let s = a.wait_for("no-audio note", |s| s.contains("NO AUDIO DEVICE") && s.contains("● bob"));
    assert!(!s.contains("d  dial"), "no dial hint without audio:\n{s}");
    a.keys("d");
    a.wait_for("refusal naming the config keys", |s| s.contains("cannot call") && s.contains("[audio] input"));
    a.keys("s");
    a.wait_for("device picker", |s| s.contains("Microphone") && s.contains("test-clip.wav"));
    for _ in 0..30 {
        if a.screen().lines().any(|l| l.contains('›') && l.contains("test-clip.wav")) {
            break;
        }
        a.keys("j");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.keys("Enter");
    a.keys("Escape");
    let s = a.wait_for("warning cleared", |s| !s.contains("NO AUDIO DEVICE") && s.contains("d  dial"));
    assert!(!s.contains("AudioIn") && !s.contains("AudioOut"), "{s}");
    a.keys("d");
    b.wait_for("incoming call", |s| s.to_lowercase().contains("incoming"));
    b.keys("r");
    a.wait_for("declined", |s| s.contains("declined"));
    a.keys("q");
    b.keys("q");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_exits_when_its_terminal_goes_away() {
    // A killed tmux session (or a dropped ssh connection) hangs up the terminal: the TUI must exit, not
    // spin on the dead tty (quitting once waited forever for crossterm's reader thread, which spins on a
    // hung-up tty, and the process stayed at 16 % of a core after every such test).
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let a = Pane::start(&format!("qv-hup-{}", std::process::id()), &alice);
    a.wait_for("the contact list", |s| s.contains("Contacts"));
    let out = Command::new("tmux").args(["display", "-p", "-t", &a.session, "#{pane_pid}"]).output().unwrap();
    let shell: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // The pane runs `sh -c "env ... qvoice ... tui"`: find qvoice among the pane's process and its children.
    let home = alice.home().display().to_string();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&home) && (*pid == shell || c.starts_with(b"/")))
        })
        .collect();
    assert!(!pids.is_empty(), "no qvoice process for {home}");
    // The worst moment: the user quits and the terminal vanishes while the TUI is shutting down.
    a.keys("q");
    drop(a); // tmux kill-session
    let deadline = Instant::now() + Duration::from_secs(5);
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.split_whitespace().next() != Some("Z")))
            .unwrap_or(false)
    };
    while pids.iter().any(alive) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<&u32> = pids.iter().filter(|p| alive(p)).collect();
    for p in &left {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    assert!(left.is_empty(), "qvoice still running 5 s after its terminal went away: {left:?}");
}

/// Encrypted file transfer from the TUI: alice presses `f` on bob, types the path, and the upload runs;
/// bob's Files pane lists the file by name, `F` then enter saves it into his `[files] download_dir`, and the
/// saved bytes are the sent ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f_sends_a_file_and_the_files_pane_saves_it() {
    let reg = Registry::start(Duration::from_secs(45)).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    let work = tempfile::tempdir().unwrap();
    let original: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let src = work.path().join("holiday.bin");
    std::fs::write(&src, &original).unwrap();
    let downloads = work.path().join("downloads");
    let cfg = bob.home().join("config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = format!("download_dir = {:?}\n", downloads.display().to_string());
    let text = if text.contains("[files]\n") {
        text.replace("[files]\n", &format!("[files]\n{line}"))
    } else {
        format!("{text}\n[files]\n{line}")
    };
    std::fs::write(&cfg, text).unwrap();

    let tag = std::process::id();
    let b = Pane::start(&format!("qv-file-bob-{tag}"), &bob);
    b.wait_for("online", |s| s.contains("● online"));
    let a = Pane::start(&format!("qv-file-alice-{tag}"), &alice);
    a.wait_for("bob online", |s| s.contains("● bob"));
    a.keys("f");
    a.wait_for("path prompt", |s| s.contains("Send a file to bob"));
    a.keys(src.to_str().unwrap());
    a.keys("Enter");
    let s = a.wait_for("sent", |s| s.contains("sent holiday.bin"));
    assert!(!s.contains("could not send"), "{s}");

    let s = b.wait_for("the file listed by name", |s| s.contains("holiday.bin") && s.contains("Files (1 waiting"));
    assert!(s.contains("2.4 MiB"), "size shown:\n{s}");
    b.keys("F");
    b.wait_for("Files pane keys", |s| s.contains("enter  save") && s.contains("discard"));
    b.keys("Enter");
    let s = b.wait_for("saved", |s| s.contains("saved ") && s.contains("verified"));
    assert!(!s.contains("Files (1"), "the saved file left the pane:\n{s}");
    let saved = std::fs::read(downloads.join("holiday.bin")).unwrap();
    assert!(saved == original, "saved {} bytes differ from the {} sent", saved.len(), original.len());
    // alice hears that bob saved it.
    a.wait_for("delivery noted", |s| s.contains("bob saved the file you sent"));
    a.keys("q");
    b.keys("q");
}
