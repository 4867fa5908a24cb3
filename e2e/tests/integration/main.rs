//! Integration tests against the fake API server and a real Prometheus, in one test binary.
//!
//! They live in one binary rather than one per file because each test binary statically links the
//! whole dependency tree (kube, rustls, linfa, axum): fourteen of them cost minutes of linking and
//! gigabytes of disk for no isolation that a module does not already give. Run one group with
//! `cargo test -p foresight-e2e --test integration controller_loop::`.
//! The closed-loop scenarios stay in their own binary (`--test scenarios`): they are the slowest
//! and are the suite a user runs against a kind cluster.

mod backtest_input;
mod backtest_prometheus;
mod chaos_soak;
mod conflicts;
mod controller_events;
mod controller_faults;
mod controller_loop;
mod fakeapi_controller;
mod fakeapi_coordination;
mod fakeapi_crud;
mod fakeapi_kubectl;
mod fakeapi_scale;
mod fakeapi_watch;
mod grouped_controller;
mod grouped_queries;
mod leader_election;
mod predictive_controller;
mod prometheus_source;
mod promql_templates;
mod promql_tenancy;
mod sharding;
mod tenancy;
mod tolerant_controller;
