//! Foresight: a Kubernetes autoscaler.
pub mod api;
