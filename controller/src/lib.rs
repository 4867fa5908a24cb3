//! Foresight: a Kubernetes autoscaler.
pub mod api;
pub mod forecast;
