//! End-to-end harness.

pub mod fakeapi;
