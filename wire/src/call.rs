//! Where a call is, and why it ended.

use serde::{Deserialize, Serialize};

/// A call's state at the registry (docs/REGISTRY.md, "Call states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Offer delivered, callee not yet answered.
    Ringing,
    /// Callee answered; waiting for the caller's reveal.
    Accepted,
    /// Handshake complete; media flows peer to peer.
    Active,
    /// Hung up by a party.
    Ended,
    /// Callee declined (or could not run the OFFER: see [`EndKind`]).
    Rejected,
    /// Caller gave up before the call became active.
    Cancelled,
    /// Nobody answered within the ringing timeout.
    Missed,
    /// Too many calls were already ringing for the callee (ringing makes nobody busy otherwise).
    Busy,
    /// The handshake did not complete in time.
    Failed,
    /// A state this build does not know (a newer registry); treated as terminal.
    #[serde(other)]
    Unknown,
}

impl CallState {
    /// Every state a registry produces, for metrics.
    pub const ALL: [CallState; 9] = [
        Self::Ringing,
        Self::Accepted,
        Self::Active,
        Self::Ended,
        Self::Rejected,
        Self::Cancelled,
        Self::Missed,
        Self::Busy,
        Self::Failed,
    ];

    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ringing => "ringing",
            Self::Accepted => "accepted",
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Missed => "missed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the call is still in progress.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Ringing | Self::Accepted | Self::Active)
    }
}

/// Why a party ended a call: sent with `/call/reject`, `/call/cancel` and `/call/hangup` (field `kind`)
/// and relayed in `call_ended` and `/call/status` (field `end_kind`), beside the free-text `reason`.
/// The other party decides what to tell its user (and which exit code to use) from this, never from the
/// text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndKind {
    /// A person hung up, cancelled or declined: the normal end.
    Hangup,
    /// The callee's client is in another call and declined this one.
    Busy,
    /// The callee's client cannot run the OFFER (protocol version, critical capability, codec or frame
    /// duration); `reason` says which. Sent before any ANSWER. Also sent by a caller that cannot use the
    /// ANSWER it got.
    Incompatible,
    /// A handshake message failed verification (signature, commitment, identity key changed).
    Security,
    /// The sender's media could not start or failed.
    MediaFailed,
    /// The sender's own setup deadline passed without the next handshake step.
    Timeout,
    /// The sender's peer stopped sending media (no packets for the silence timeout).
    PeerVanished,
    /// No candidate pair carried authenticated media within the check timeout after the keys were agreed
    /// (docs/PROTOCOL.md, "Candidates and connectivity checks"); `reason` says what was tried.
    NoMediaPath,
    /// Anything else; `reason` says what.
    Error,
    /// A kind this build does not know (a newer peer); treat like [`EndKind::Error`].
    #[serde(other)]
    Unknown,
}

impl EndKind {
    /// The kind's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hangup => "hangup",
            Self::Busy => "busy",
            Self::Incompatible => "incompatible",
            Self::Security => "security",
            Self::MediaFailed => "media_failed",
            Self::Timeout => "timeout",
            Self::PeerVanished => "peer_vanished",
            Self::NoMediaPath => "no_media_path",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_values_parse() {
        for s in CallState::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<CallState>(&format!("\"{}\"", s.as_str())).unwrap(), s);
        }
        assert_eq!(serde_json::from_str::<CallState>("\"on_hold\"").unwrap(), CallState::Unknown);
        assert!(!CallState::Unknown.is_live());
        for k in [EndKind::Hangup, EndKind::Incompatible, EndKind::MediaFailed, EndKind::PeerVanished] {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
        }
        assert_eq!(serde_json::from_str::<EndKind>("\"transferred\"").unwrap(), EndKind::Unknown);
    }
}
