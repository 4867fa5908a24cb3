//! End-to-end harness: a fake Kubernetes API server and a real Prometheus for tests on machines where no
//! Kubernetes API server can run.

pub mod chaos;
pub mod fakeapi;
pub mod harness;
pub mod prometheus;
pub mod sim;
pub mod testkit;
