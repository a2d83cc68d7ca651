//! A registry that misbehaves on purpose, for client tests: a small HTTP/1.1 server on 127.0.0.1:0 that
//! answers the client's start-up requests plausibly (register, users, pending, call actions) and streams
//! whatever the test pushes on `/events`. It records every request so tests can read what the client
//! sent (e.g. its registered keys).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One request the client made.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

pub struct Hostile {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Chunks to write on the (first) `/events` stream; the stream ends when this is dropped.
    pub events: mpsc::Sender<Vec<u8>>,
    /// Bytes written on `/events` so far.
    pub streamed: Arc<std::sync::atomic::AtomicU64>,
    /// Set once a client opened `/events`.
    pub stream_opened: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (events, rx) = mpsc::channel::<Vec<u8>>(4);
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream_opened = Arc::new(tokio::sync::Notify::new());
        let (s2, st2, so2) = (seen.clone(), streamed.clone(), stream_opened.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (seen, rx, streamed, opened) = (s2.clone(), rx.clone(), st2.clone(), so2.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, seen, rx, streamed, opened).await;
                });
            }
        });
        Self { url, seen, events, streamed, stream_opened, task }
    }

    /// The body of the client's last request to `path`.
    pub fn body_of(&self, path: &str) -> Option<serde_json::Value> {
        let seen = self.seen.lock().unwrap();
        let s = seen.iter().rev().find(|s| s.path == path)?;
        serde_json::from_slice(&s.body).ok()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.method == method && s.path.starts_with(path_prefix)).count()
    }
}

type Events = Arc<tokio::sync::Mutex<Option<mpsc::Receiver<Vec<u8>>>>>;

async fn serve(
    mut sock: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    events: Events,
    streamed: Arc<std::sync::atomic::AtomicU64>,
    opened: Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Read one request head and body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        seen.lock().unwrap().push(Seen { method: method.clone(), path: path.clone(), body: body.clone() });
        let user = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["username"].as_str().map(str::to_owned));
        let call_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["call_id"].as_str().map(str::to_owned));
        let (status, json) = match (method.as_str(), path.as_str()) {
            ("POST", "/register") => (
                "201 Created",
                serde_json::json!({"username": user, "created": true, "observed_addr": "127.0.0.1:1"}).to_string(),
            ),
            ("GET", p) if p.starts_with("/users") => ("200 OK", r#"{"users":[],"next":null}"#.to_owned()),
            ("GET", p) if p.starts_with("/call/pending/") => ("200 OK", r#"{"calls":[]}"#.to_owned()),
            ("POST", p) if p.starts_with("/call/") => {
                let state = match p {
                    "/call/reject" => "rejected",
                    "/call/cancel" => "cancelled",
                    "/call/accept" => "accepted",
                    _ => "ended",
                };
                ("200 OK", serde_json::json!({"call_id": call_id, "state": state}).to_string())
            }
            ("GET", "/events") => {
                let rx = events.lock().await.take();
                let Some(mut rx) = rx else {
                    let body = r#"{"error":"shutting_down","message":"only one stream"}"#;
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    sock.write_all(resp.as_bytes()).await?;
                    return Ok(());
                };
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\r\n",
                )
                .await?;
                opened.notify_one();
                while let Some(chunk) = rx.recv().await {
                    sock.write_all(&chunk).await?;
                    streamed.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(());
            }
            _ => ("404 Not Found", r#"{"error":"not_found","message":"no such endpoint"}"#.to_owned()),
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
        sock.write_all(resp.as_bytes()).await?;
    }
}
