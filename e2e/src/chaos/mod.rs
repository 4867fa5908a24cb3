//! Chaos for the soak test: a fault-injecting proxy in front of a real Prometheus, a TCP proxy that cuts the
//! controller's API connections (watches included), and the seeded soak that drives them against many policies
//! while checking the controller's invariants every second.
//!
//! ```text
//!   foresight run (process, SIGKILLed and restarted) ──► TcpChaos ──► FakeApiServer (CRD, 409/500 faults)
//!          │                                                               ▲
//!          └──► TcpChaos (refuses) ──► PromChaosProxy (tarpit, 5xx/429, ──► Prometheus (killed, restarted)
//!                                       garbage, oversized; logs what       ▲ scrapes every second
//!                                       it served per namespace)            │
//!                                                          Simulators (one per Deployment) ◄── replicas
//! ```

pub mod prom_proxy;
pub mod soak;
pub mod tcp_proxy;

pub use prom_proxy::{Outcome, PromChaosProxy, PromFault, Served};
pub use soak::{SoakConfig, SoakReport};
pub use tcp_proxy::TcpChaos;
