//! qvoice client library: the pieces of the terminal voice client that the `qvoice` binary wires together.

pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod logging;
pub mod media;
pub mod session;
pub mod tui;
