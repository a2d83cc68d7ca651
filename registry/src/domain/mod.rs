//! Registry domain logic that does not know HTTP: each module has its own error type, converted to
//! `ApiError` at the edge (`crate::http`).

pub mod files;
