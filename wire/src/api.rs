//! Request and response bodies of the registry's endpoints, in the order of docs/REGISTRY.md.
//! Request bodies refuse unknown fields (the registry answers `invalid_json`); responses accept them.

use serde::{Deserialize, Serialize};

use crate::call::{CallState, EndKind};
use crate::events::IncomingCall;

/// `GET /health` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: String,
    /// The registry's version.
    pub version: String,
}

/// `POST /register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// Must equal the `x-qvoice-user` header.
    pub username: String,
    /// Ed25519 public key, base64url (32 bytes).
    pub identity_key: String,
    /// Signed ML-KEM-768 prekey in proto encoding, base64url.
    pub prekey: String,
    /// Optional human name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Optional UDP media port (1-65535).
    #[serde(default)]
    pub media_port: Option<u16>,
}

/// `POST /register` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The registered name.
    pub username: String,
    /// True when the name was newly claimed (201), false for an update (200).
    pub created: bool,
    /// The address the registry saw the request come from (`ip:port`), if known.
    pub observed_addr: Option<String>,
}

/// `GET /fetch/{username}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    /// The name.
    pub username: String,
    /// Ed25519 public key, base64url.
    pub identity_key: String,
    /// Signed prekey, base64url (proto encoding).
    pub prekey: String,
    /// The prekey's id.
    pub prekey_id: u32,
    /// Optional human name.
    pub display_name: Option<String>,
    /// Optional media port.
    pub media_port: Option<u16>,
    /// Whether the user has an open `/events` stream. A user without one may still answer calls by
    /// polling `/call/pending`: calls to them ring anyway.
    pub online: bool,
    /// When the user was last online (Unix ms); now if online, null if never seen.
    pub last_seen_ms: Option<u64>,
    /// When the name was claimed (Unix ms).
    pub registered_ms: u64,
}

/// One `/users` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The name.
    pub username: String,
    /// Optional human name.
    pub display_name: Option<String>,
    /// Whether online now.
    pub online: bool,
    /// Last online (Unix ms), if known.
    pub last_seen_ms: Option<u64>,
}

/// `GET /users` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersResponse {
    /// This page, in name order.
    pub users: Vec<UserEntry>,
    /// Pass as `?after=` for the next page; null on the last page.
    pub next: Option<String>,
}

/// `POST /call/initiate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitiateBody {
    /// The caller's signed OFFER, base64url.
    pub offer: String,
}

/// Response of the call-changing endpoints (initiate, accept, confirm, reject, cancel, hangup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStateResponse {
    /// Call id.
    pub call_id: String,
    /// New state.
    pub state: CallState,
    /// For a ringing call: when it becomes `missed` (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// For `initiate`: whether the callee has an open `/events` stream now. When false the call still
    /// rings (the callee may be polling `/call/pending`) until answered or missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_online: Option<bool>,
}

/// `GET /call/pending/{username}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingResponse {
    /// Calls ringing for you, oldest first.
    pub calls: Vec<IncomingCall>,
}

/// `POST /call/accept` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// Call id (32 hex).
    pub call_id: String,
    /// The callee's signed ANSWER, base64url.
    pub answer: String,
}

/// `POST /call/confirm` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// Call id (32 hex).
    pub call_id: String,
    /// The caller's REVEAL, base64url.
    pub reveal: String,
}

/// Body of `/call/reject`, `/call/cancel` and `/call/hangup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndBody {
    /// Call id (32 hex).
    pub call_id: String,
    /// Optional short reason shown to the other party (at most 128 characters, no control characters).
    #[serde(default)]
    pub reason: Option<String>,
    /// Why the call ends, for the other party's client; absent means [`EndKind::Hangup`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EndKind>,
}

/// `GET /call/status/{call_id}` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Call id.
    pub call_id: String,
    /// Current state.
    pub state: CallState,
    /// Caller's username.
    pub caller: String,
    /// Callee's username.
    pub callee: String,
    /// OFFER, base64url.
    pub offer: String,
    /// ANSWER, base64url, once accepted.
    pub answer: Option<String>,
    /// REVEAL, base64url, once confirmed.
    pub reveal: Option<String>,
    /// When it started (Unix ms).
    pub created_ms: u64,
    /// Last change (Unix ms).
    pub updated_ms: u64,
    /// Why it ended, if it did.
    pub reason: Option<String>,
    /// The ending party's [`EndKind`], if it sent one.
    #[serde(default)]
    pub end_kind: Option<EndKind>,
}

/// One TURN server with credentials for the asking user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnCredential {
    /// `host:port` of the server (UDP).
    pub server: String,
    /// TURN REST API user name, `<expiry>:<username>`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
    /// When the credentials stop working, Unix ms.
    pub expires_ms: u64,
}

/// `GET /turn/credentials` response: the media servers for NAT traversal (docs/REGISTRY.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaServersResponse {
    /// STUN servers, `host:port`.
    pub stun: Vec<String>,
    /// TURN servers with fresh credentials (empty when the registry has no relay configured).
    pub turn: Vec<TurnCredential>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_refuse_unknown_fields_responses_accept_them() {
        assert!(serde_json::from_str::<EndBody>(r#"{"call_id":"x","resaon":"typo"}"#).is_err());
        let e: EndBody = serde_json::from_str(r#"{"call_id":"x","kind":"incompatible","reason":"r"}"#).unwrap();
        assert_eq!(e.kind, Some(EndKind::Incompatible));
        let r: CallStateResponse = serde_json::from_str(r#"{"call_id":"x","state":"ringing","new":1}"#).unwrap();
        assert_eq!((r.state, r.expires_ms, r.callee_online), (CallState::Ringing, None, None));
    }

    #[test]
    fn end_body_omits_an_absent_kind() {
        let e = EndBody { call_id: "x".into(), reason: None, kind: None };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"call_id":"x","reason":null}"#);
    }
}
