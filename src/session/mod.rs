//! The session layer: local identity and contacts, the registry client, and the async driver that runs
//! handshakes and calls and reports everything as one stream of [`SessionEvent`]s.

pub mod client;
pub mod driver;
pub mod events;
pub mod files;
pub mod sse;
pub mod store;
pub mod waiting;

pub use driver::{SessionOptions, run};
pub use events::{AudioDirection, ContactView, Direction, EndReason, SessionCommand, SessionEvent, Trust};
