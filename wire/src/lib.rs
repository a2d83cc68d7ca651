//! qvoice-wire: every JSON shape that crosses the registry's HTTP edge, in both directions.
//!
//! The registry (server) and the client both build and parse these types, so a field renamed here is
//! renamed on both sides at once and the client never links the server to learn a shape. The crate is
//! serde-only: no HTTP, no async, no crypto. Binary values (keys, handshake messages) are base64url
//! strings here; `qvoice-proto` gives them meaning. `docs/REGISTRY.md` documents the same shapes.
//!
//! Forward compatibility: responses and events may gain fields (clients ignore unknown fields), and
//! the enums a client reads ([`ErrorCode`], [`EndKind`], [`CallState`]) have an `Unknown`/catch-all
//! so a newer registry or peer never breaks an older client's parsing. Request bodies are strict: the
//! registry refuses unknown fields so a typo is an error, not a silent no-op.

pub mod api;
pub mod call;
pub mod error;
pub mod events;
pub mod files;

pub use api::*;
pub use call::{CallState, EndKind};
pub use error::{ErrorBody, ErrorCode};
pub use events::{Event, IncomingCall};
pub use files::{
    AckFileBody, ChunkStored, CreateFileBody, FileClosedResponse, FileOutcome, FileState, FileStatus, FilesResponse,
};
