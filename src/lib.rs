//! qvoice client library: the pieces of the terminal voice client that the `qvoice` binary wires together.

pub mod media;
