//! `qvoice demo` as a new user runs it, in a real terminal (tmux): its temporary folder is gone after `q`,
//! after SIGTERM, and after the terminal closes (SIGHUP).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_qvoice");

/// A tmux session running `qvoice demo` with TMPDIR pointing at `tmp`.
struct Demo {
    session: String,
}

impl Demo {
    fn start(session: &str, tmp: &Path) -> Self {
        let cmd = format!("exec env TMPDIR={} {BIN} demo", tmp.display());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", session, "-x", "80", "-y", "24", &cmd])
            .status()
            .expect("tmux must be installed (apt-get install tmux; .ci/run does)");
        assert!(ok.success());
        let d = Self { session: session.to_owned() };
        d.wait_for("the echo contact on screen", || d.screen().contains("● echo "));
        d
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pid(&self) -> String {
        let out = Command::new("tmux").args(["display", "-p", "-t", &self.session, "#{pane_pid}"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn wait_for(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{}: no {what}; screen:\n{}", self.session, self.screen());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}

/// The demo folders in `tmp`.
fn demo_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("qvoice-demo-"))
        .collect()
}

/// Whether `pid` still runs (a zombie the tmux server has not reaped yet has exited).
fn running(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the parenthesised command name.
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s != "Z")
}

#[test]
fn the_demo_removes_its_temporary_folder_on_quit_sigterm_and_sighup() {
    let tag = std::process::id();
    let tmp = tempfile::tempdir().unwrap();
    for (how, n) in [("q", 0), ("SIGTERM", 1), ("SIGHUP", 2)] {
        let d = Demo::start(&format!("qv-demo-{tag}-{n}"), tmp.path());
        let pid = d.pid();
        let dirs = demo_dirs(tmp.path());
        assert_eq!(dirs.len(), 1, "{how}: {dirs:?}");
        // Owner-only, like every folder qvoice makes.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tmp.path().join(&dirs[0])).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "{how}");
        match how {
            "q" => assert!(Command::new("tmux").args(["send-keys", "-t", &d.session, "q"]).status().unwrap().success()),
            "SIGTERM" => assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success()),
            _ => assert!(Command::new("tmux").args(["kill-session", "-t", &d.session]).status().unwrap().success()),
        }
        d.wait_for("exit", || !running(&pid));
        assert_eq!(demo_dirs(tmp.path()), Vec::<String>::new(), "{how} left the demo folder behind");
    }
}
