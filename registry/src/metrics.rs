//! Prometheus text metrics: requests by route and status (counted by a middleware), plus gauges
//! read at scrape time: registered users, calls by state, open event streams, connections and why
//! they were closed. Call counts are operator information, so `/metrics` is only served with the
//! configured bearer token, or on a separate (private) address.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;
use crate::calls::CallState;

/// Request counters.
#[derive(Debug, Default)]
pub struct Metrics {
    // route template -> status -> count; looked up by &str so the hot path does not allocate.
    requests: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
}

impl Metrics {
    /// Counts one finished request.
    pub fn count(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            if let Some(by_status) = m.get_mut(route) {
                *by_status.entry(status).or_insert(0) += 1;
            } else {
                m.insert(route.to_owned(), BTreeMap::from([(status, 1)]));
            }
        }
    }
}

/// Middleware: counts every request under its route template and logs it.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics().count(route, status);
    tracing::debug!(%method, route, status, "request");
    resp
}

/// Whether `headers` carry `Authorization: Bearer <metrics_token>` (false when no token is configured).
pub fn token_ok(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    use sha2::Digest as _;
    let Some(token) = state.config().metrics_token.as_deref().filter(|t| !t.is_empty()) else { return false };
    let Some(given) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Comparing digests keeps the comparison's timing independent of where the strings differ.
    sha2::Sha256::digest(given.as_bytes()) == sha2::Sha256::digest(token.as_bytes())
}

/// Renders all metrics in the Prometheus text format.
pub fn render(state: &AppState) -> String {
    let mut out = String::new();
    out.push_str("# HELP qvoice_registry_requests_total HTTP requests by route template and status.\n");
    out.push_str("# TYPE qvoice_registry_requests_total counter\n");
    if let Ok(m) = state.metrics().requests.lock() {
        for (route, by_status) in m.iter() {
            for (status, n) in by_status {
                let _ = writeln!(out, "qvoice_registry_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
    }
    out.push_str("# HELP qvoice_registry_users Registered users.\n# TYPE qvoice_registry_users gauge\n");
    let _ = writeln!(out, "qvoice_registry_users {}", state.store().count());
    out.push_str("# HELP qvoice_registry_calls Known calls by state.\n# TYPE qvoice_registry_calls gauge\n");
    let counts = state.call_counts();
    for s in CallState::ALL {
        let n = counts.get(&s).copied().unwrap_or(0);
        let _ = writeln!(out, "qvoice_registry_calls{{state=\"{}\"}} {n}", s.as_str());
    }
    out.push_str(
        "# HELP qvoice_registry_event_streams Open /events streams.\n# TYPE qvoice_registry_event_streams gauge\n",
    );
    let _ = writeln!(out, "qvoice_registry_event_streams {}", state.hub().connections());
    out.push_str(
        "# HELP qvoice_registry_event_streams_replaced_total Streams ended because their user opened more than the cap.\n\
         # TYPE qvoice_registry_event_streams_replaced_total counter\n",
    );
    let _ = writeln!(out, "qvoice_registry_event_streams_replaced_total {}", state.hub().replaced());
    let c = state.conn_stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    out.push_str(
        "# HELP qvoice_registry_connections Open client connections.\n# TYPE qvoice_registry_connections gauge\n",
    );
    let _ = writeln!(out, "qvoice_registry_connections {}", c.open.load(std::sync::atomic::Ordering::Relaxed));
    out.push_str(
        "# HELP qvoice_registry_connections_closed_total Connections closed by the registry, by reason.\n\
         # TYPE qvoice_registry_connections_closed_total counter\n",
    );
    for (reason, n) in [
        ("header_timeout", load(&c.header_timeouts)),
        ("idle_timeout", load(&c.idle_timeouts)),
        ("evicted", load(&c.evicted)),
        ("refused", load(&c.refused)),
        ("shutdown", load(&c.cut_at_shutdown)),
    ] {
        let _ = writeln!(out, "qvoice_registry_connections_closed_total{{reason=\"{reason}\"}} {n}");
    }
    out
}
