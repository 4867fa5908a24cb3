//! End-to-end harness.
pub mod prometheus;
