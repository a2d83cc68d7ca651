//! What the registry pushes on `GET /events` (Server-Sent Events): each event's `event:` line is
//! [`Event::name`] and its `data:` line is the JSON of [`Event`], which carries the same name in `type`.

use serde::{Deserialize, Serialize};

use crate::call::{CallState, EndKind};
use crate::files::FileOutcome;

/// An incoming call, as pushed and as listed by `/call/pending`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncomingCall {
    /// 32 lowercase hex digits.
    pub call_id: String,
    /// Caller's username.
    pub caller: String,
    /// The caller's signed OFFER, base64url.
    pub offer: String,
    /// When the call started ringing (Unix ms).
    pub created_ms: u64,
    /// When it will become `missed` (Unix ms).
    pub expires_ms: u64,
}

/// Something pushed to a user. Serialized with a `type` field equal to the SSE event name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// First event on every stream.
    Ready {
        /// The stream's user.
        username: String,
        /// Users online now (a bounded list).
        online: Vec<String>,
    },
    /// Someone is calling you.
    IncomingCall(IncomingCall),
    /// The callee answered your call.
    CallAccepted {
        /// Call id.
        call_id: String,
        /// Callee's username.
        callee: String,
        /// The callee's signed ANSWER, base64url.
        answer: String,
    },
    /// The caller completed the handshake.
    CallConfirmed {
        /// Call id.
        call_id: String,
        /// Caller's username.
        caller: String,
        /// The caller's REVEAL, base64url.
        reveal: String,
    },
    /// The call reached a terminal state.
    CallEnded {
        /// Call id.
        call_id: String,
        /// The terminal state.
        state: CallState,
        /// Why, if known (free text from the ending party or the registry).
        reason: Option<String>,
        /// The ending party's [`EndKind`], if it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<EndKind>,
    },
    /// A file for you is completely uploaded and waiting (docs/REGISTRY.md, "Files").
    IncomingFile {
        /// File id (32 hex).
        file_id: String,
        /// Sender's username.
        sender: String,
        /// Plaintext size in bytes.
        size: u64,
        /// When the registry deletes it unless acknowledged (Unix ms).
        expires_ms: u64,
    },
    /// A file you sent or were sent left the registry: acknowledged, discarded, refused, cancelled or expired.
    FileClosed {
        /// File id (32 hex).
        file_id: String,
        /// The other party (the recipient for the sender, the sender for the recipient).
        peer: String,
        /// How it ended.
        outcome: FileOutcome,
        /// The recipient's or registry's short reason, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A new name was registered (so directories can list it before it first comes online).
    UserRegistered {
        /// The new user.
        username: String,
    },
    /// A user came online or went offline.
    Presence {
        /// Whose presence changed.
        username: String,
        /// Whether they now have an open stream.
        online: bool,
    },
}

impl Event {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "ready",
            Self::IncomingCall(_) => "incoming_call",
            Self::CallAccepted { .. } => "call_accepted",
            Self::CallConfirmed { .. } => "call_confirmed",
            Self::CallEnded { .. } => "call_ended",
            Self::IncomingFile { .. } => "incoming_file",
            Self::FileClosed { .. } => "file_closed",
            Self::Presence { .. } => "presence",
            Self::UserRegistered { .. } => "user_registered",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_carries_its_type() {
        let ev = Event::Presence { username: "bob".into(), online: false };
        let j = serde_json::to_string(&ev).unwrap();
        assert_eq!(j, r#"{"type":"presence","username":"bob","online":false}"#);
        assert_eq!(ev.name(), "presence");
        let ev = Event::UserRegistered { username: "carol".into() };
        let j = serde_json::to_string(&ev).unwrap();
        assert_eq!(j, r#"{"type":"user_registered","username":"carol"}"#);
        assert_eq!(ev.name(), "user_registered");
        let ended = Event::CallEnded {
            call_id: "00".into(),
            state: CallState::Rejected,
            reason: Some("no common codec".into()),
            kind: Some(EndKind::Incompatible),
        };
        let back: Event = serde_json::from_str(&serde_json::to_string(&ended).unwrap()).unwrap();
        assert_eq!(back, ended);
        assert_eq!(back.name(), "call_ended");
    }
}
