//! qvoice-proto: the sans-IO protocol core shared by the qvoice client and registry.
//!
//! It owns every byte that crosses a trust boundary: identity and prekey formats, the three-message hybrid
//! post-quantum handshake (OFFER, ANSWER, REVEAL), the key schedule, the short authentication string and
//! safety numbers, request signatures for the registry, and the encrypted media frame format with its replay
//! window. It never opens a socket, reads a clock or an OS random source: time is an argument and randomness
//! comes from a `CryptoRng` the caller passes, so whole calls can be simulated deterministically in tests.
//! `docs/PROTOCOL.md` specifies the same formats byte by byte.

pub mod auth;
pub mod b64;
mod codec;
mod error;
pub mod file;
pub mod frame;
pub mod handshake;
pub mod identity;
pub mod media;
pub mod names;
mod types;
#[cfg(test)]
mod vectors;

pub use error::Error;
pub use frame::{FrameType, Header};
pub use handshake::{
    Answer, Callee, CalleeParams, Caller, CallerParams, Choice, Offer, Refusal, Reveal, SessionKeys, caps, choose,
};
pub use identity::{
    IdentityKey, IdentitySecret, PREKEY_LIFETIME_MS, PREKEY_RETENTION_MS, PrekeySecret, SignedPrekey, safety_number,
};
pub use media::{MediaCrypto, Opened, ReplayWindow};
pub use types::{
    CallId, Candidate, CandidateKind, Codec, CodecOffer, FRAME_DURATIONS_MS, FrameDurations, MAX_CANDIDATES, Role,
    SessionId, Username,
};

/// Protocol version: the first byte of every handshake message. Version 2 added the version and
/// capability negotiation, per-codec frame durations, prekey expiry and origin-bound request signatures.
pub const PROTOCOL_VERSION: u8 = 2;
/// Version of the media frame format (the high nibble of a frame's first byte); unchanged since 1.
pub const FRAME_VERSION: u8 = 1;
