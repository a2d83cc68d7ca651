//! Fuzzes the registry's HTTP handlers through `router(state)` (no socket) on a real `AppState` with two
//! registered users: every route, path parameter and query, JSON body and header the registry parses.
//!
//! Input: route (1 byte), signer (1 byte: unsigned, fuzzer's own auth headers, or correctly signed by
//! alice or bob, so bodies are parsed past authentication), then 0xFF-separated fields: path parameter,
//! query, body, and up to three `name:value` headers. `$O $A $R $K $P $C` in the body or path become the
//! genuine OFFER, ANSWER, REVEAL, identity key, prekey and call id, so JSON shapes the fuzzer builds can
//! reach the handshake checks and the call state machine.
//!
//! Properties: nothing panics; no response is a 5xx; every error is `{"error": code, "message": text}`.

#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use qvoice_fuzz::{Cursor, Fixture, REBUILD_EVERY, Signer, check_response};

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/register"),
    ("GET", "/fetch/"),
    ("GET", "/users"),
    ("POST", "/call/initiate"),
    ("GET", "/call/pending/"),
    ("POST", "/call/accept"),
    ("POST", "/call/confirm"),
    ("POST", "/call/reject"),
    ("POST", "/call/cancel"),
    ("POST", "/call/hangup"),
    ("GET", "/call/status/"),
    ("GET", "/events"),
    ("DELETE", "/register"),
    ("GET", "/"),
];

static FIXTURE: Mutex<Option<Fixture>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = FIXTURE.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|f| f.served >= REBUILD_EVERY) {
        let seed = guard.as_ref().map_or(1, |f| f.served);
        *guard = None;
        *guard = Some(Fixture::new(seed));
    }
    let Some(fx) = guard.as_mut() else { return };
    let mut cur = Cursor::new(data);
    let (method, route) = ROUTES[usize::from(cur.u8()) % ROUTES.len()];
    let signer_byte = cur.u8();
    let param = fx.substitute(cur.field());
    let query = cur.field().to_vec();
    let body = fx.substitute(cur.field());
    let mut extra = Vec::new();
    for _ in 0..3 {
        let h = cur.field();
        if h.is_empty() {
            break;
        }
        let (k, v) = match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i + 1..]),
            None => (h, &[][..]),
        };
        extra.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
    }
    // Percent-encode the path parameter and query so that any bytes make a valid URI.
    let enc = |b: &[u8], keep: &dyn Fn(u8) -> bool| -> String {
        b.iter().map(|&c| if keep(c) { char::from(c).to_string() } else { format!("%{c:02X}") }).collect()
    };
    let mut pq = route.to_owned();
    if route.ends_with('/') {
        pq.push_str(&enc(&param, &|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)));
    }
    if !query.is_empty() {
        pq.push('?');
        pq.push_str(&enc(&query, &|c| c.is_ascii_alphanumeric() || b"-._=&".contains(&c)));
    }
    let signer = match signer_byte % 4 {
        0 | 1 => Signer::None,
        2 => Signer::User("alice"),
        _ => Signer::User("bob"),
    };
    let (status, resp) = fx.send(method, &pq, signer, body, extra);
    if status == 0 {
        return; // the request could not be built (not a registry behaviour)
    }
    check_response(status, &resp, &format!("{method} {pq}"));
});
