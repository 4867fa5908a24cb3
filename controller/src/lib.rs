//! Foresight: a Kubernetes autoscaler that scales on the signals that matter, sees load coming, never flaps,
//! and explains every decision it makes.
//!
//! - [`engine`]: the pure decision core (no kube, no tokio, no network).
//! - [`forecast`]: the pure regression forecaster behind the predictive policy, and `forecast::Predictor`, which caches its fits.
//! - [`backtest`]: replays a policy against a recorded trace, next to the HPA, a static count and an oracle.
//! - [`api`]: the `ScalingPolicy` custom resource and its conversion into the engine's policy.
//! - [`source`]: where metric samples come from: the PromQL templates and planner (`source::promql`), grouped
//!   reads, budgets, the Prometheus client, breakers and pool (or memory in tests).
//! - [`controller`]: the reconcile loop (observe, decide, act) and what it writes to status and events.
//! - [`run`], [`leader`], [`shard`], [`server`], [`metrics`], [`telemetry`]: `foresight run`'s wiring.

pub mod api;
pub mod backtest;
pub mod cli;
pub mod controller;
pub mod crdgen;
pub mod engine;
pub mod forecast;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod server;
pub mod shard;
pub mod source;
pub mod telemetry;
