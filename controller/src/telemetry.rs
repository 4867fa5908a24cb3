//! Structured logs: JSON in a container (one object per line, with the reconcile span's namespace and name),
//! human-readable in a terminal.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, with colours.
    Pretty,
    /// Pretty when stderr is a terminal, JSON otherwise.
    Auto,
}

impl LogFormat {
    /// The concrete format for this process.
    pub fn resolve(self, terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if terminal => LogFormat::Pretty,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level {level:?}: {source}")]
    InvalidLevel {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. `level` is a tracing filter: `info`, `debug`, or `info,foresight=debug`.
pub fn init(format: LogFormat, level: &str) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_new(level).map_err(|source| TelemetryError::InvalidLevel { level: level.into(), source })?;
    let registry = tracing_subscriber::registry().with(filter);
    match format.resolve(std::io::stderr().is_terminal()) {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_current_span(true).with_span_list(false).with_writer(std::io::stderr))
            .try_init()?,
        _ => registry.with(fmt::layer().pretty().with_writer(std::io::stderr)).try_init()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_json_in_a_container_and_pretty_in_a_terminal() {
        assert_eq!(LogFormat::Auto.resolve(false), LogFormat::Json);
        assert_eq!(LogFormat::Auto.resolve(true), LogFormat::Pretty);
        assert_eq!(LogFormat::Json.resolve(true), LogFormat::Json);
    }

    #[test]
    fn a_bad_level_is_a_clear_error() {
        let error = init(LogFormat::Json, "info,foresight=loud").expect_err("invalid level");
        assert!(error.to_string().contains("invalid log level"), "{error}");
    }
}
