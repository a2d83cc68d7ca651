//! Fuzzes the registry below the router: raw bytes into hyper's HTTP/1.1 server (request line, headers,
//! chunked and content-length bodies, pipelining) in front of the registry's router, over an in-memory
//! pipe. The client side closes after writing, so every connection ends.
//!
//! Properties: nothing panics or hangs (1 s per input); every response is `HTTP/1.x <status>` and never a
//! 5xx.

#![no_main]

use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use qvoice_fuzz::{Fixture, REBUILD_EVERY};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|f| f.served >= REBUILD_EVERY) {
        let seed = guard.as_ref().map_or(1, |f| f.served);
        *guard = None;
        *guard = Some(Fixture::new(seed));
    }
    let Some(fx) = guard.as_mut() else { return };
    fx.served += 1;
    let app = fx.app.clone();
    let input = data.to_vec();
    let out = fx.rt.block_on(async move {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 9))));
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.max_buf_size(qvoice_registry::conn::MAX_HEAD_BYTES);
        let conn = builder.serve_connection(TokioIo::new(server), service);
        let serve = tokio::spawn(async move {
            let _ = conn.await;
        });
        let io = async {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ = client.read_to_end(&mut out).await;
            out
        };
        let out = tokio::time::timeout(Duration::from_secs(1), io).await;
        serve.abort();
        out
    });
    let out = out.expect("the server neither answered nor closed within 1 s");
    let text = String::from_utf8_lossy(&out);
    // hyper answers an HTTP/1.0 request in HTTP/1.0.
    for (i, _) in text.match_indices("HTTP/1.").filter(|(i, _)| text[*i..].len() >= 12) {
        let status = &text[i + 9..i + 12];
        assert!(!status.starts_with('5'), "server error: {text}");
    }
    if !out.is_empty() {
        assert!(out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "), "not an HTTP response: {text}");
    }
});
