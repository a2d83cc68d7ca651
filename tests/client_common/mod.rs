//! Shared harness of the client tests: a real qvoice-registry on 127.0.0.1:0 with a temp SQLite file, and
//! real `qvoice` processes with their own temp homes, followed through their `--json` event lines.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_qvoice");

pub struct Registry {
    pub running: Option<qvoice_registry::RunningRegistry>,
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    ringing: Duration,
}

impl Registry {
    pub async fn start(ringing: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let running = Self::spawn_at(dir.path(), "127.0.0.1:0".parse().unwrap(), ringing).await;
        let addr = running.addr;
        Self { running: Some(running), dir, addr, ringing }
    }

    async fn spawn_at(dir: &Path, bind: std::net::SocketAddr, ringing: Duration) -> qvoice_registry::RunningRegistry {
        let mut cfg = qvoice_registry::Config::new(dir.join("registry.sqlite3"));
        cfg.bind = bind;
        cfg.ringing_timeout = ringing;
        qvoice_registry::spawn(cfg).await.unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }

    /// Starts again on the same port with the same database.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(Self::spawn_at(self.dir.path(), self.addr, self.ringing).await);
    }
}

/// A registry with `alice` and `bob` registered.
pub async fn alice_and_bob(ringing: Duration) -> (Registry, User, User) {
    let reg = Registry::start(ringing).await;
    let alice = User::init("alice", &reg.url()).await;
    let bob = User::init("bob", &reg.url()).await;
    (reg, alice, bob)
}

/// One user: a temp home with keys and config.
pub struct User {
    pub name: String,
    pub home: tempfile::TempDir,
}

impl User {
    pub async fn init(name: &str, registry: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(BIN)
            .args(["--home", home.path().to_str().unwrap(), "init", "--username", name, "--registry", registry])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "init {name}: {}", String::from_utf8_lossy(&out.stderr));
        Self { name: name.into(), home }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Starts `qvoice listen` with silence in and null out plus `extra`, and waits until its push stream
    /// is up (so calls to it ring at once).
    pub async fn listen(&self, extra: &[&str]) -> Proc {
        let mut args = vec!["listen", "--input", "silence", "--output", "null"];
        args.extend_from_slice(extra);
        let mut p = self.spawn(&args);
        p.wait_for("connection", SHORT, |v| v["connected"] == true).await;
        p
    }

    /// Starts `qvoice call NAME` with silence in and null out plus `extra`.
    pub fn call(&self, name: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["call", name, "--input", "silence", "--output", "null"];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    /// Runs `qvoice --home H <args> --json` with piped stdin/stdout.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        self.spawn_env(args, &[])
    }

    /// Like [`User::spawn`] with extra environment variables (sound-server sockets, ALSA config).
    pub fn spawn_env(&self, args: &[&str], env: &[(String, String)]) -> Proc {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--home").arg(self.home.path()).args(args).arg("--json");
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => eprintln!("[{name} stdout] {line}"),
                }
            }
        });
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{name} stderr] {line}");
            }
        });
        let stdin = child.stdin.take();
        Proc { name: self.name.clone(), child, events: rx, seen: Vec::new(), stdin }
    }
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    events: mpsc::UnboundedReceiver<Value>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Waits (up to `timeout`) for an event named `name` matching `pred`; panics with the events seen.
    pub async fn wait_for(&mut self, name: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(v) = self.seen.iter().find(|v| v["event"] == name && pred(v)) {
            return v.clone();
        }
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if v["event"] == name && pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!("{}: exited before event {name}; saw {:#?}", self.name, self.names()),
                Err(_) => panic!("{}: no event {name} within {timeout:?}; saw {:#?}", self.name, self.names()),
            }
        }
    }

    pub async fn wait(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_for(name, timeout, |_| true).await
    }

    fn names(&self) -> Vec<String> {
        self.seen.iter().map(|v| v["event"].as_str().unwrap_or("?").to_owned()).collect()
    }

    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for exit and returns the exit code; drains the remaining events into `seen`.
    pub async fn exit_code(&mut self, timeout: Duration) -> i32 {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {timeout:?}; saw {:#?}", self.name, self.names()))
            .unwrap();
        while let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(2), self.events.recv()).await {
            self.seen.push(v);
        }
        status.code().unwrap_or(-1)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// The last `metrics` event.
    pub fn last_metrics(&self) -> Option<Value> {
        self.seen.iter().rev().find(|v| v["event"] == "metrics").map(|v| v["metrics"].clone())
    }

    /// The `ended` event's reason kind.
    pub fn end_reason(&self) -> Option<String> {
        self.seen
            .iter()
            .rev()
            .find(|v| v["event"] == "ended")
            .map(|v| v["reason"]["kind"].as_str().unwrap_or("").to_owned())
    }
}

pub fn wav_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

pub const SHORT: Duration = Duration::from_secs(10);
pub const LONG: Duration = Duration::from_secs(30);
