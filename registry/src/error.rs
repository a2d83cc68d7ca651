//! The one error type every handler returns. Each variant has a fixed HTTP status and a stable
//! machine-readable code (documented in docs/REGISTRY.md); the body is always
//! `{"error": code, "message": text}`. Internal errors are logged and answered with a generic message,
//! so nothing about the host (paths, SQL) leaks to clients.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use qvoice_wire::{ErrorBody, ErrorCode};

/// An API failure, mapped to a status code and a JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not the JSON this endpoint takes.
    #[error("request body is not valid JSON for this endpoint: {0}")]
    InvalidJson(String),
    /// 400 `invalid_username`: not `[a-z0-9][a-z0-9_.-]{0,31}`.
    #[error("username must be 1-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit")]
    InvalidUsername,
    /// 400 `invalid_base64`: a binary field is not unpadded base64url.
    #[error("field `{0}` is not unpadded base64url")]
    InvalidBase64(&'static str),
    /// 400 `invalid_key`: a key has the wrong length or is not a valid key.
    #[error("field `{0}` is not a valid key of the expected length")]
    InvalidKey(&'static str),
    /// 400 `invalid_field`: a field is out of range or too long.
    #[error("{0}")]
    InvalidField(String),
    /// 400 `invalid_message`: a handshake message does not parse, or does not fit the call.
    #[error("handshake message `{0}` is malformed or does not belong to this call")]
    InvalidMessage(&'static str),
    /// 400 `unsupported_version`: a handshake message uses a protocol version this registry does not speak.
    #[error(
        "the handshake message uses protocol version {0}; this registry speaks version {v}: update qvoice on both ends",
        v = qvoice_proto::PROTOCOL_VERSION
    )]
    UnsupportedVersion(u8),
    /// 400 `bad_message_signature`: a handshake message or prekey signature does not verify.
    #[error("the signature on `{0}` does not verify against the registered identity key")]
    BadMessageSignature(&'static str),
    /// 400 `self_call`: the offer's callee is the caller.
    #[error("you cannot call yourself")]
    SelfCall,
    /// 401 `missing_auth`: one of the auth headers is absent or unparsable.
    #[error("sign the request: headers x-qvoice-user, x-qvoice-timestamp and x-qvoice-signature are required")]
    MissingAuth,
    /// 401 `unauthenticated`: the signing user is not registered.
    #[error("the signing user is not registered; POST /register first")]
    Unauthenticated,
    /// 401 `bad_signature`: the request signature does not verify.
    #[error("request signature does not verify against the registered identity key")]
    BadSignature,
    /// 401 `wrong_origin`: the request was signed for another registry.
    #[error(
        "the request was signed for registry `{signed}`, but this registry is {expected}; set the client's registry URL to this registry's public URL"
    )]
    WrongOrigin {
        /// The origin the client signed.
        signed: String,
        /// What this registry accepts, for people.
        expected: String,
    },
    /// 401 `stale_timestamp`: the request timestamp is more than the allowed skew away from server time.
    #[error("request timestamp is more than {0} s away from server time; check the system clock")]
    StaleTimestamp(u64),
    /// 401 `replayed`: this exact signed request was seen before.
    #[error("this signed request was already used; sign every request afresh")]
    Replayed,
    /// 401 `replayed`: the timestamp is not after the last one accepted from this user before the registry
    /// restarted (the persisted replay floor).
    #[error("this request is not newer than your last request before the registry restarted; sign it again")]
    NotAfterFloor,
    /// 403 `forbidden`: authenticated, but not allowed to do this to this resource.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 `unknown_user`.
    #[error("no user named `{0}` is registered")]
    UnknownUser(String),
    /// 404 `unknown_call`.
    #[error("no call with this id is known (ended calls are purged after 5 minutes)")]
    UnknownCall,
    /// 404 `not_found`: no such route.
    #[error("no such endpoint; see docs/REGISTRY.md")]
    NotFound,
    /// 405 `method_not_allowed`.
    #[error("this endpoint does not take that HTTP method")]
    MethodNotAllowed,
    /// 409 `username_taken`: the name belongs to a different identity key.
    #[error("username `{0}` is registered to a different identity key; pick another name")]
    UsernameTaken(String),
    /// 409 `wrong_state`: the call is not in a state that allows this action.
    #[error("call is {0}; this action is not possible now")]
    WrongState(&'static str),
    /// 409 `busy`: the callee is already in a call.
    #[error("`{0}` is in another call; try again later")]
    Busy(String),
    /// 409 `already_in_call`: the caller is already in a call.
    #[error("you are already in a call; hang up first")]
    AlreadyInCall,
    /// 409 `call_exists`: the call id is already in use.
    #[error("a call with this id already exists; generate a new call id")]
    CallExists,
    /// 413 `body_too_large`.
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// 413 `file_too_large`: the file (encrypted) is over the registry's per-file limit.
    #[error("the file is {size} bytes encrypted; this registry takes at most {max} bytes per file")]
    FileTooLarge {
        /// Stored bytes the manifest declares.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// 507 `quota_exceeded`: the sender's waiting files would exceed their quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 507 `inbox_full`: the recipient's waiting files would exceed their inbox quota.
    #[error("{0}'s inbox on this registry is full; send it after they have downloaded their waiting files")]
    InboxFull(String),
    /// 404 `unknown_file`.
    #[error("no file with this id is waiting (delivered, refused, cancelled and expired files are deleted)")]
    UnknownFile,
    /// 409 `file_exists`: another manifest uses this file id.
    #[error("another file already uses this file id; create the transfer again")]
    FileExists,
    /// 400 `invalid_chunk`: a chunk's index or length does not fit its manifest.
    #[error("{0}")]
    InvalidChunk(String),
    /// 409 `chunk_conflict`: other bytes are stored at this index.
    #[error("chunk {0} is already stored with different bytes; the upload must be restarted as a new file")]
    ChunkConflict(u32),
    /// 409 `file_not_ready`: the file is still being uploaded.
    #[error("the file is still being uploaded; wait for the incoming_file event")]
    FileNotReady,
    /// 429 `rate_limited`.
    #[error("too many requests; retry in a few seconds")]
    RateLimited,
    /// 429 `rate_limited`: too many requests from this address failed authentication; sent with
    /// `connection: close`. Correctly signed requests from the same address are not affected.
    #[error("too many requests from your address failed authentication; check your keys and clock, retry in a minute")]
    AuthFailuresLimited,
    /// 408 `request_timeout`: the request (its body included) was not completed in time.
    #[error("the request was not completed within {0} s (slow upload or busy registry); retry")]
    RequestTimeout(u64),
    /// 503 `overloaded`: the registry is at its connection limit and none could be freed.
    #[error("the registry has too many open connections; retry in a few seconds")]
    Overloaded,
    /// 503 `shutting_down`.
    #[error("the registry is shutting down; retry shortly")]
    ShuttingDown,
    /// 500 `internal`: logged, never echoed.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of this error (fixed per code, see [`ErrorCode::status`]).
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidJson(_) => ErrorCode::InvalidJson,
            Self::InvalidUsername => ErrorCode::InvalidUsername,
            Self::InvalidBase64(_) => ErrorCode::InvalidBase64,
            Self::InvalidKey(_) => ErrorCode::InvalidKey,
            Self::InvalidField(_) => ErrorCode::InvalidField,
            Self::InvalidMessage(_) => ErrorCode::InvalidMessage,
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::BadMessageSignature(_) => ErrorCode::BadMessageSignature,
            Self::SelfCall => ErrorCode::SelfCall,
            Self::MissingAuth => ErrorCode::MissingAuth,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::WrongOrigin { .. } => ErrorCode::WrongOrigin,
            Self::StaleTimestamp(_) => ErrorCode::StaleTimestamp,
            Self::Replayed | Self::NotAfterFloor => ErrorCode::Replayed,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::UnknownUser(_) => ErrorCode::UnknownUser,
            Self::UnknownCall => ErrorCode::UnknownCall,
            Self::NotFound => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::UsernameTaken(_) => ErrorCode::UsernameTaken,
            Self::WrongState(_) => ErrorCode::WrongState,
            Self::Busy(_) => ErrorCode::Busy,
            Self::AlreadyInCall => ErrorCode::AlreadyInCall,
            Self::CallExists => ErrorCode::CallExists,
            Self::BodyTooLarge(_) => ErrorCode::BodyTooLarge,
            Self::RateLimited | Self::AuthFailuresLimited => ErrorCode::RateLimited,
            Self::RequestTimeout(_) => ErrorCode::RequestTimeout,
            Self::Overloaded => ErrorCode::Overloaded,
            Self::FileTooLarge { .. } => ErrorCode::FileTooLarge,
            Self::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Self::InboxFull(_) => ErrorCode::InboxFull,
            Self::UnknownFile => ErrorCode::UnknownFile,
            Self::FileExists => ErrorCode::FileExists,
            Self::InvalidChunk(_) => ErrorCode::InvalidChunk,
            Self::ChunkConflict(_) => ErrorCode::ChunkConflict,
            Self::FileNotReady => ErrorCode::FileNotReady,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let body = ErrorBody { error: self.code(), message: self.to_string() };
        let mut resp = (self.status(), Json(body)).into_response();
        let headers = resp.headers_mut();
        match self {
            Self::RateLimited | Self::Overloaded | Self::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Self::AuthFailuresLimited => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                // Make a sender of junk open a new connection for every further attempt.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::RequestTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        resp
    }
}

/// Answers unknown routes with the JSON error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Answers wrong methods with the JSON error shape.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_matches_its_class() {
        assert_eq!(ApiError::SelfCall.status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::Replayed.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(ApiError::Busy("b".into()).status(), StatusCode::CONFLICT);
        assert_eq!(ApiError::BodyTooLarge(1).status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(ApiError::Internal(anyhow::anyhow!("x")).code(), ErrorCode::Internal);
    }

    #[test]
    fn internal_message_does_not_leak_details() {
        let e = ApiError::Internal(anyhow::anyhow!("/secret/path: disk full"));
        assert!(!e.to_string().contains("secret"));
    }
}
