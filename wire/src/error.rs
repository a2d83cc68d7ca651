//! The registry's error codes: one stable machine-readable code per failure, each with a fixed HTTP
//! status. Every error response is an [`ErrorBody`].

use serde::{Deserialize, Serialize};

/// A registry error code (docs/REGISTRY.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not the JSON this endpoint takes.
    InvalidJson,
    /// 400: a username is not valid.
    InvalidUsername,
    /// 400: a binary field is not unpadded base64url.
    InvalidBase64,
    /// 400: a key has the wrong length or is not a valid key.
    InvalidKey,
    /// 400: a field is out of range or too long.
    InvalidField,
    /// 400: a handshake message does not parse, or does not fit the call.
    InvalidMessage,
    /// 400: a handshake message uses a protocol version this registry does not speak.
    UnsupportedVersion,
    /// 400: a handshake message or prekey signature does not verify.
    BadMessageSignature,
    /// 400: the offer's callee is the caller.
    SelfCall,
    /// 401: an auth header is absent or unparsable.
    MissingAuth,
    /// 401: the signing user is not registered.
    Unauthenticated,
    /// 401: the request signature does not verify.
    BadSignature,
    /// 401: the request was signed for another registry (its `x-qvoice-origin` is not this registry's).
    WrongOrigin,
    /// 401: the request timestamp is too far from server time.
    StaleTimestamp,
    /// 401: this signed request was seen before.
    Replayed,
    /// 403: authenticated, but not allowed to do this.
    Forbidden,
    /// 404: no such user.
    UnknownUser,
    /// 404: no such call.
    UnknownCall,
    /// 404: no such route.
    NotFound,
    /// 405: wrong HTTP method.
    MethodNotAllowed,
    /// 409: the name belongs to another identity key.
    UsernameTaken,
    /// 409: the call's state does not allow this.
    WrongState,
    /// 409: too many calls are ringing for the callee at once (ringing makes nobody busy otherwise;
    /// docs/REGISTRY.md, "Call admission").
    Busy,
    /// 409: the caller is in a call.
    AlreadyInCall,
    /// 409: the call id is already used.
    CallExists,
    /// 408: the request (head or body) did not arrive within the request timeout.
    RequestTimeout,
    /// 413: body too large.
    BodyTooLarge,
    /// 413: the file is larger than the registry takes.
    FileTooLarge,
    /// 507: the sender's files waiting on the registry would exceed their quota.
    QuotaExceeded,
    /// 507: the recipient's waiting files would exceed their inbox quota.
    InboxFull,
    /// 404: no such file (delivered, cancelled and expired files are deleted).
    UnknownFile,
    /// 409: a different manifest already uses this file id.
    FileExists,
    /// 400: a chunk has the wrong index or length for its file.
    InvalidChunk,
    /// 409: a chunk with other bytes is already stored at this index.
    ChunkConflict,
    /// 409: the file is still being uploaded.
    FileNotReady,
    /// 429: over quota.
    RateLimited,
    /// 500: logged on the server, never detailed.
    Internal,
    /// 503: the registry is shutting down.
    ShuttingDown,
    /// 503: every connection slot is busy; retry shortly.
    Overloaded,
    /// A code this build does not know (a newer registry).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status the registry answers this code with.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidUsername
            | Self::InvalidBase64
            | Self::InvalidKey
            | Self::InvalidField
            | Self::InvalidMessage
            | Self::UnsupportedVersion
            | Self::BadMessageSignature
            | Self::SelfCall => 400,
            Self::MissingAuth
            | Self::Unauthenticated
            | Self::BadSignature
            | Self::WrongOrigin
            | Self::StaleTimestamp
            | Self::Replayed => 401,
            Self::Forbidden => 403,
            Self::UnknownUser | Self::UnknownCall | Self::UnknownFile | Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UsernameTaken | Self::WrongState | Self::Busy | Self::AlreadyInCall | Self::CallExists => 409,
            Self::RequestTimeout => 408,
            Self::FileExists | Self::ChunkConflict | Self::FileNotReady => 409,
            Self::InvalidChunk => 400,
            Self::BodyTooLarge | Self::FileTooLarge => 413,
            Self::QuotaExceeded | Self::InboxFull => 507,
            Self::RateLimited => 429,
            Self::Internal | Self::Unknown => 500,
            Self::ShuttingDown | Self::Overloaded => 503,
        }
    }

    /// The code's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidUsername => "invalid_username",
            Self::InvalidBase64 => "invalid_base64",
            Self::InvalidKey => "invalid_key",
            Self::InvalidField => "invalid_field",
            Self::InvalidMessage => "invalid_message",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadMessageSignature => "bad_message_signature",
            Self::SelfCall => "self_call",
            Self::MissingAuth => "missing_auth",
            Self::Unauthenticated => "unauthenticated",
            Self::BadSignature => "bad_signature",
            Self::WrongOrigin => "wrong_origin",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Replayed => "replayed",
            Self::Forbidden => "forbidden",
            Self::UnknownUser => "unknown_user",
            Self::UnknownCall => "unknown_call",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UsernameTaken => "username_taken",
            Self::WrongState => "wrong_state",
            Self::Busy => "busy",
            Self::AlreadyInCall => "already_in_call",
            Self::CallExists => "call_exists",
            Self::RequestTimeout => "request_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::FileTooLarge => "file_too_large",
            Self::QuotaExceeded => "quota_exceeded",
            Self::InboxFull => "inbox_full",
            Self::UnknownFile => "unknown_file",
            Self::FileExists => "file_exists",
            Self::InvalidChunk => "invalid_chunk",
            Self::ChunkConflict => "chunk_conflict",
            Self::FileNotReady => "file_not_ready",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::ShuttingDown => "shutting_down",
            Self::Overloaded => "overloaded",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"error": code, "message": what to fix}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub error: ErrorCode,
    /// What went wrong and what to do next, for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names_and_unknown_codes_parse() {
        for c in [ErrorCode::WrongState, ErrorCode::UnsupportedVersion, ErrorCode::WrongOrigin, ErrorCode::Busy] {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.as_str()));
        }
        let b: ErrorBody = serde_json::from_str(r#"{"error":"teapot","message":"x","extra":1}"#).unwrap();
        assert_eq!(b.error, ErrorCode::Unknown);
        assert_eq!(ErrorCode::Busy.status(), 409);
        assert_eq!(ErrorCode::WrongOrigin.status(), 401);
    }
}
