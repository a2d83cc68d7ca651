//! The one error type of the protocol core; every variant is something a peer or the registry did.

/// Why a protocol operation failed. Receivers drop the input and count the variant; none is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not have the documented layout (the text says which field).
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    /// An Ed25519 signature did not verify against the expected identity key.
    #[error("bad signature")]
    BadSignature,
    /// The REVEAL does not match the commitment made in the OFFER.
    #[error("REVEAL does not match the OFFER's commitment")]
    CommitmentMismatch,
    /// A message arrived that does not belong to this state (other call, other party, wrong order).
    #[error("message not valid in this state: {0}")]
    WrongState(&'static str),
    /// A media frame with a counter already accepted.
    #[error("replayed frame")]
    Replay,
    /// A media frame older than the replay window.
    #[error("frame older than the replay window")]
    TooOld,
    /// AES-GCM authentication failed: wrong key, wrong direction or tampered bytes.
    #[error("authentication tag mismatch")]
    TagFailure,
    /// The frame is addressed to another media session.
    #[error("frame for another session")]
    WrongSession,
    /// The caller-supplied output buffer cannot hold the result.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A username outside `[a-z0-9][a-z0-9_.-]{0,31}`.
    #[error("invalid username: use 1-32 characters from a-z, 0-9, '_', '.', '-', starting with a letter or digit")]
    InvalidUsername,
    /// A public key or ciphertext of the wrong length or not a valid encoding.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A handshake message of a protocol version this implementation does not speak (the value).
    #[error("handshake protocol version {0} is not supported (this implementation speaks version {v})", v = crate::PROTOCOL_VERSION)]
    UnsupportedVersion(u8),
    /// The peer chose something we did not offer, or offered nothing we can run (the text says what).
    #[error("incompatible peer: {0}")]
    Incompatible(&'static str),
    /// The callee's signed prekey expired at this time (Unix ms): the registry serves a stale one, or the
    /// callee has not been online to publish a fresh one.
    #[error("the callee's published prekey expired (at {expires_ms} Unix ms)")]
    PrekeyExpired { expires_ms: u64 },
    /// The per-direction frame counter is exhausted; the call must be re-keyed.
    #[error("frame counter exhausted")]
    CounterExhausted,
}
