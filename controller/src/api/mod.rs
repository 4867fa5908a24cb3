//! The ScalingPolicy API.
