//! Signed-request authentication. Every endpoint except health, metrics and fetch carries
//! `x-qvoice-user`, `x-qvoice-origin`, `x-qvoice-timestamp` (Unix ms) and `x-qvoice-signature`
//! (base64url Ed25519) over the byte string built by `qvoice_proto::auth::signing_bytes` (registry
//! origin, method, path and query, user, timestamp, SHA-256 of the body; see docs/REGISTRY.md). The
//! origin must be this registry's ([`origin_accepted`]), so a request signed for another registry is
//! refused here.
//!
//! Checks run cheapest first: headers, clock skew (2 minutes by default), signature, the persisted
//! replay floor (`floor.rs`: after a restart, only timestamps newer than the last accepted one), and only
//! then the replay cache, so forged requests cannot fill the cache. A signature is remembered until its
//! timestamp falls out of the skew window, after which the skew check alone rejects it.
//!
//! Rate limits follow the same order (see `limits.rs`): a request that fails any of these checks is
//! charged to its address's failed-authentication budget, never to the user it claims to be; a request
//! that passes is charged to the verified user only.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::StatusCode;
use qvoice_proto::auth::{HEADER_ORIGIN, HEADER_SIGNATURE, HEADER_TIMESTAMP, HEADER_USER};
use qvoice_proto::{IdentityKey, Username};

use crate::AppState;
use crate::error::ApiError;

/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;
/// Replay cache entries beyond which new signed requests are refused until old ones expire.
pub const REPLAY_CACHE_MAX: usize = 1_000_000;

/// A request with its auth headers parsed and its body read, not yet verified.
#[derive(Debug)]
pub struct SignedRequest {
    /// The claimed signer.
    pub user: Username,
    /// The registry origin the client signed for (`x-qvoice-origin`).
    pub origin: String,
    /// The request's `Host` (or HTTP/2 authority), if any.
    pub host: Option<String>,
    /// Claimed signing time (Unix ms).
    pub timestamp_ms: u64,
    /// The raw signature.
    pub signature: [u8; SIGNATURE_LEN],
    /// HTTP method, upper case.
    pub method: String,
    /// Path and query exactly as sent.
    pub path_and_query: String,
    /// The request body.
    pub body: Bytes,
    /// The peer address the server saw, if known.
    pub peer: Option<SocketAddr>,
}

impl FromRequest<AppState> for SignedRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer_ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let parsed = (|| {
            let h = req.headers();
            let header = |name: &str| -> Result<String, ApiError> {
                h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned).ok_or(ApiError::MissingAuth)
            };
            let user = Username::parse(&header(HEADER_USER)?).map_err(|_| ApiError::InvalidUsername)?;
            let origin = header(HEADER_ORIGIN)?;
            let host = header(axum::http::header::HOST.as_str())
                .ok()
                .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
            let timestamp_ms: u64 = header(HEADER_TIMESTAMP)?.parse().map_err(|_| ApiError::MissingAuth)?;
            let sig = qvoice_proto::b64::decode(&header(HEADER_SIGNATURE)?).map_err(|_| ApiError::BadSignature)?;
            let signature: [u8; SIGNATURE_LEN] = sig.try_into().map_err(|_| ApiError::BadSignature)?;
            let method = req.method().as_str().to_owned();
            let uri = req.uri();
            let path_and_query = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            Ok((user, origin, host, timestamp_ms, signature, method, path_and_query, peer))
        })();
        let (user, origin, host, timestamp_ms, signature, method, path_and_query, peer) =
            parsed.map_err(|e| state.limiters().auth_failure(peer_ip, e))?;
        let limit = state.config().body_limit;
        let body = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(limit)
            } else {
                ApiError::InvalidField("could not read the request body".to_owned())
            }
        })?;
        Ok(Self { user, origin, host, timestamp_ms, signature, method, path_and_query, body, peer })
    }
}

impl SignedRequest {
    /// Verifies skew, origin, signature against `key`, and freshness. A failure is charged to the sender's
    /// address (`limits.rs`).
    ///
    /// Fails with `StaleTimestamp`, `WrongOrigin`, `BadSignature` or `Replayed`, or with
    /// `AuthFailuresLimited` once the address has failed too often.
    pub fn verify(&self, state: &AppState, key: &IdentityKey) -> Result<(), ApiError> {
        self.check(state, key).map_err(|e| state.limiters().auth_failure(self.peer.map(|p| p.ip()), e))
    }

    fn check(&self, state: &AppState, key: &IdentityKey) -> Result<(), ApiError> {
        let now = state.now_ms();
        let skew = state.config().max_skew_ms;
        if now.abs_diff(self.timestamp_ms) > skew {
            return Err(ApiError::StaleTimestamp(skew / 1000));
        }
        origin_accepted(&self.origin, self.host.as_deref(), &state.config().public_origins)?;
        qvoice_proto::auth::verify_request(
            key,
            &self.origin,
            &self.method,
            &self.path_and_query,
            self.user.as_str(),
            self.timestamp_ms,
            &self.body,
            &self.signature,
        )
        .map_err(|_| ApiError::BadSignature)?;
        state.floors().check(self.user.as_str(), self.timestamp_ms)?;
        state.replay().check_and_insert(&self.signature, self.timestamp_ms.saturating_add(skew), now)
    }

    /// Verifies against the signer's registered key, records the timestamp as the user's replay floor,
    /// charges the user's request quota and returns their record.
    ///
    /// Fails with `Unauthenticated` for an unregistered signer, else like [`SignedRequest::verify`], and
    /// with `RateLimited` when the verified user is over quota.
    pub fn authenticate(&self, state: &AppState) -> Result<std::sync::Arc<crate::store::UserRecord>, ApiError> {
        let Some(rec) = state.store().get(self.user.as_str()) else {
            return Err(state.limiters().auth_failure(self.peer.map(|p| p.ip()), ApiError::Unauthenticated));
        };
        self.verify(state, &rec.identity_key)?;
        state.floors().record(self.user.as_str(), self.timestamp_ms);
        state.limiters().signed_user(self.user.as_str())?;
        Ok(rec)
    }

    /// Like [`SignedRequest::authenticate`], and waits until the timestamp is on disk, so that this
    /// request cannot be replayed after a crash and restart. For requests whose replay would act
    /// (`/call/initiate`, `/events`); see `floor.rs`.
    ///
    /// Fails like [`SignedRequest::authenticate`], or with `Internal` when the floor cannot be written.
    pub async fn authenticate_durable(
        &self,
        state: &AppState,
    ) -> Result<std::sync::Arc<crate::store::UserRecord>, ApiError> {
        let rec = self.authenticate(state)?;
        crate::floor::Floors::durable(state, self.user.as_str(), self.timestamp_ms).await?;
        Ok(rec)
    }
}

/// Authentication of a read that may be signed or not (`/fetch`): a signed read is verified and charged to
/// the user's read quota; an unsigned one to its address's public-read quota.
#[derive(Debug)]
pub struct ReadAuth {
    /// The verified reader, when the request was signed.
    pub user: Option<Username>,
}

impl FromRequest<AppState> for ReadAuth {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if req.headers().contains_key(HEADER_USER) || req.headers().contains_key(HEADER_SIGNATURE) {
            let signed = SignedRequest::from_request(req, state).await?;
            signed.authenticate(state)?;
            state.limiters().read_user(signed.user.as_str())?;
            return Ok(Self { user: Some(signed.user) });
        }
        let ip = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        state.limiters().public_read(ip)?;
        Ok(Self { user: None })
    }
}

/// Whether a request signed for `signed` (its `x-qvoice-origin`) may be served by this registry: it must
/// be canonical and one of `public` (the configured origins), or, when none are configured, name the
/// host and port of the request's own `host` header (the port defaulting to the signed scheme's).
///
/// Fails with `WrongOrigin`.
pub fn origin_accepted(signed: &str, host: Option<&str>, public: &[String]) -> Result<(), ApiError> {
    let wrong = |expected: String| ApiError::WrongOrigin { signed: signed.chars().take(100).collect(), expected };
    let o = qvoice_proto::auth::parse_origin(signed)
        .map_err(|_| wrong("not named that way (a signed origin looks like https://host:443)".into()))?;
    if !public.is_empty() {
        let list: Vec<String> = public.iter().map(|p| format!("`{p}`")).collect();
        return if public.iter().any(|p| p == signed) { Ok(()) } else { Err(wrong(list.join(" or "))) };
    }
    let host = host.unwrap_or("").to_ascii_lowercase();
    let default_port = if o.scheme == "https" { 443 } else { 80 };
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && (h.starts_with('[') || !h.contains(':')) => (h, p.parse().ok()),
        _ => (host.as_str(), Some(default_port)),
    };
    if h == o.host && port == Some(o.port) { Ok(()) } else { Err(wrong(format!("reached as `{host}`"))) }
}

/// Signatures seen within the skew window.
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; SIGNATURE_LEN], u64>>,
}

impl ReplayCache {
    /// Remembers `sig` until `expires_ms`.
    ///
    /// Fails with `Replayed` when `sig` is already remembered, and `RateLimited` when the cache is
    /// full of unexpired entries.
    pub fn check_and_insert(&self, sig: &[u8; SIGNATURE_LEN], expires_ms: u64, now: u64) -> Result<(), ApiError> {
        let mut seen = self.seen.lock().map_err(|_| ApiError::Internal(anyhow::anyhow!("replay lock poisoned")))?;
        if seen.get(sig).is_some_and(|&exp| exp >= now) {
            return Err(ApiError::Replayed);
        }
        if seen.len() >= REPLAY_CACHE_MAX {
            seen.retain(|_, exp| *exp >= now);
            if seen.len() >= REPLAY_CACHE_MAX {
                return Err(ApiError::RateLimited);
            }
        }
        seen.insert(*sig, expires_ms);
        Ok(())
    }

    /// Forgets expired entries.
    pub fn prune(&self, now: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.retain(|_, exp| *exp >= now);
        }
    }

    /// Number of remembered signatures.
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_against_the_configuration_or_the_host_header() {
        let ok = |signed: &str, host: Option<&str>, public: &[&str]| {
            let public: Vec<String> = public.iter().map(|p| (*p).to_owned()).collect();
            origin_accepted(signed, host, &public).is_ok()
        };
        assert!(ok("http://127.0.0.1:5001", Some("127.0.0.1:5001"), &[]));
        assert!(ok("http://[::1]:5001", Some("[::1]:5001"), &[]));
        assert!(ok("https://reg.example:443", Some("Reg.Example"), &[]), "default port of the signed scheme");
        assert!(!ok("http://127.0.0.1:5001", Some("127.0.0.1:5002"), &[]), "signed for another registry");
        assert!(!ok("http://127.0.0.1:5001", None, &[]));
        assert!(!ok("http://127.0.0.1:5001/", Some("127.0.0.1:5001"), &[]), "not canonical");
        // Configured: the Host header (which the sender controls) no longer matters.
        assert!(ok("https://reg.example:443", Some("10.0.0.5:5001"), &["https://reg.example:443"]));
        assert!(!ok("https://evil.example:443", Some("evil.example"), &["https://reg.example:443"]));
        let e = origin_accepted("https://evil.example:443", None, &["https://reg.example:443".to_owned()]);
        assert_eq!(e.unwrap_err().code(), crate::error::ErrorCode::WrongOrigin);
    }

    #[test]
    fn replay_cache_rejects_repeats_until_expiry_then_prunes() {
        let c = ReplayCache::default();
        let s = [7u8; 64];
        c.check_and_insert(&s, 1_000, 0).unwrap();
        assert_eq!(c.check_and_insert(&s, 1_000, 999).unwrap_err().code(), crate::error::ErrorCode::Replayed);
        c.prune(1_000);
        assert_eq!(c.len(), 1);
        c.prune(1_001);
        assert!(c.is_empty());
    }
}
