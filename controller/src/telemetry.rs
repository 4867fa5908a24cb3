//! Structured logs: JSON in a container, human-readable in a terminal.
//!
//! A JSON line is one flat object: `timestamp`, `level`, `target`, `span` (the innermost span's name), the
//! fields of every span it is in (so a line logged while reconciling a policy has `namespace` and `name`
//! at the top level), then the event's own fields and `message`. Numbers and booleans stay JSON numbers and
//! booleans. tracing-subscriber's own JSON nests the span as `"span": {"name": "reconcile", "name": ...}`,
//! whose repeated key JSON parsers resolve to `reconcile`, losing the policy's name.

use std::{fmt::Write as _, io::IsTerminal};

use serde_json::{Map, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    EnvFilter, Layer, fmt,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::Context,
    prelude::*,
    registry::LookupSpan,
};

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
        LogFormat::Json => registry.with(json_layer(std::io::stderr)).try_init()?,
        _ => registry.with(fmt::layer().pretty().with_writer(std::io::stderr)).try_init()?,
    }
    Ok(())
}

/// The JSON log layer, writing flat objects (see the module docs) to `writer`.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    SpanValues.and_then(fmt::layer().event_format(FlatJson).with_writer(writer))
}

/// A span's fields as JSON values, kept in the span's extensions for [`FlatJson`].
struct SpanFields(Map<String, Value>);

/// Records each span's fields as typed JSON values.
struct SpanValues;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanValues {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }
}

/// Collects fields as typed JSON values: numbers and booleans as such, everything else (Display with `%`,
/// Debug with `?`) as its text.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v =
            serde_json::Number::from_f64(value).map(Value::Number).unwrap_or_else(|| Value::String(value.to_string()));
        self.0.insert(field.name().into(), v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().into(), text.into());
    }
}

/// Formats an event as one flat JSON object (see the module docs).
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), jiff::Timestamp::now().to_string().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<_> = scope.from_root().collect();
            if let Some(innermost) = spans.last() {
                line.insert("span".into(), innermost.name().into());
            }
            for span in &spans {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut line));
        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// A test writer into a shared buffer.
#[cfg(test)]
pub(crate) struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    #[test]
    fn a_json_line_is_flat_with_the_spans_fields_on_top() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = buf.clone();
        let make = move || Capture(writer.clone());
        let subscriber = tracing_subscriber::registry().with(json_layer(make));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", namespace = "shop", name = "checkout");
            let _entered = span.enter();
            tracing::info!(seconds = 0.25, replicas = 3u64, dry = false, "scaled");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON object");
        assert_eq!(line["namespace"], "shop", "{text}");
        assert_eq!(line["name"], "checkout", "{text}");
        assert_eq!(line["span"], "reconcile", "{text}");
        assert_eq!(line["level"], "INFO", "{text}");
        assert_eq!(line["message"], "scaled", "{text}");
        assert_eq!(line["seconds"], 0.25, "{text}");
        assert_eq!(line["replicas"], 3, "{text}");
        assert_eq!(line["dry"], false, "{text}");
    }
}
