//! Transport tests on a virtual clock with simulated NATs and relay.
