//! Foresight's demo workload: `serve` is an HTTP server with tunable CPU cost, latency and error rate that
//! exports the series Foresight's metric templates read; `load` offers it a request rate that follows a profile
//! (constant, step, ramp, a compressed daily cycle, or a recorded trace).

pub mod cli;
pub mod load;
pub mod metrics;
pub mod profile;
pub mod server;
pub mod trace;
