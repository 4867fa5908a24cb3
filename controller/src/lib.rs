//! Foresight: a Kubernetes autoscaler that scales on the signals that matter, sees load coming, never flaps,
//! and explains every decision it makes.
//!
//! - [`engine`]: the pure decision core (no kube, no tokio, no network).
//! - [`api`]: the `ScalingPolicy` custom resource and its conversion into the engine's policy.

pub mod api;
pub mod backtest;
pub mod cli;
pub mod crdgen;
pub mod engine;
pub mod forecast;
pub mod predict;
