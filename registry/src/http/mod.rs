//! HTTP handlers per resource, converting domain errors to `ApiError` at the edge.

pub mod files;
