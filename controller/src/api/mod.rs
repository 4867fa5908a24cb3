//! The `ScalingPolicy` API (`autoscaling.foresight.dev/v1alpha1`): the CRD types, and their conversion into
//! the engine's validated, defaulted form.

pub mod convert;
pub mod duration;
pub mod lenient;
pub mod spec;
pub mod status;

pub use duration::Duration;
pub use lenient::RawScalingPolicy;
pub use spec::*;
pub use status::*;

/// The annotation that stops Foresight from patching a target while it keeps evaluating and reporting.
pub const PAUSED_ANNOTATION: &str = "autoscaling.foresight.dev/paused";
