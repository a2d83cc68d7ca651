//! Shared by the benches and the process-level tests: start the real registry binary and read its
//! memory use.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Starts `qvoice-registry` on 127.0.0.1:0 with rate limits out of the way.
pub fn start(db: &Path) -> (Child, String) {
    start_logging(db, "warn", Stdio::null())
}

/// Like [`start`], with `RUST_LOG=rust_log` and stderr going to `stderr`; returns the child and its base
/// URL, read from the `listening on ADDR` banner.
pub fn start_logging(db: &Path, rust_log: &str, stderr: Stdio) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qvoice-registry"));
    cmd.args(["--bind", "127.0.0.1:0", "--rate-per-minute", "100000000", "--db"])
        .arg(db)
        .env("RUST_LOG", rust_log)
        // Requests are signed for the tests' fixed origin (tests/common/mod.rs ORIGIN).
        .env("QVOICE_REGISTRY_PUBLIC_URL", "http://registry.test:80")
        .stderr(stderr);
    started(cmd)
}

/// Starts `qvoice-registry --bind 127.0.0.1:0 --db DB` plus `args` (default rate limits), with
/// `open_files` as its open-file limit when given (through the shell's `ulimit -n`).
pub fn start_with(db: &Path, args: &[&str], envs: &[(&str, &str)], open_files: Option<u32>) -> (Child, String) {
    let bin = env!("CARGO_BIN_EXE_qvoice-registry");
    let mut cmd = match open_files {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["--bind", "127.0.0.1:0", "--db"]).arg(db).args(args).env("RUST_LOG", "warn").stderr(Stdio::null());
    // Requests are signed for the tests' fixed origin (tests/common/mod.rs ORIGIN).
    cmd.env("QVOICE_REGISTRY_PUBLIC_URL", "http://registry.test:80");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    started(cmd)
}

fn started(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("bad banner {line:?}")).to_owned();
    (child, format!("http://{addr}"))
}

/// (VmRSS, VmHWM) of `pid` in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Percentile of sorted microsecond samples.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}
