//! The Prometheus [`MetricsSource`]: `prometheus-http-query` over our own `reqwest` client.
//!
//! The client is ours so that we control the per-query timeout, authentication, extra headers and extra root CAs.
//! The configuration is plain data: the controller resolves Secrets and ConfigMaps into it before it gets here.

use super::memory::range_points;
use super::{MetricsSource, Sample, SourceError, timestamp_from_seconds};
use base64::Engine as _;
use futures::future::BoxFuture;
use jiff::Timestamp;
use prometheus_http_query::response::Data;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// The default per-query timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach one Prometheus. Equal configs share one client (see [`super::SourcePool`]).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090` (a path prefix such as `/prometheus` is kept).
    pub address: String,
    /// The longest one query may take, connection included; also sent to Prometheus as its evaluation timeout.
    pub timeout: Duration,
    pub auth: Option<Auth>,
    /// Extra headers sent with every query (e.g. `X-Scope-OrgID` for Thanos or Mimir tenants).
    pub headers: Vec<(String, String)>,
    /// Extra root certificates (PEM) trusted on top of the system's, for a Prometheus behind a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for PrometheusConfig {
    /// Header values are not printed: they often carry API keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("PrometheusConfig")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .field("auth", &self.auth)
            .field("header_names", &header_names)
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl PrometheusConfig {
    /// A config for `address` with the default timeout and nothing else.
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), timeout: DEFAULT_TIMEOUT, auth: None, headers: Vec::new(), ca_pem: None }
    }
}

/// Credentials sent in the `Authorization` header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Auth {
    /// Never prints secrets: configs end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => write!(f, "Basic {{ username: {username:?}, password: <redacted> }}"),
        }
    }
}

impl Auth {
    fn header_value(&self) -> Result<HeaderValue, ConfigError> {
        let text = match self {
            Self::Bearer(token) => format!("Bearer {}", token.trim()),
            Self::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                format!("Basic {encoded}")
            }
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| ConfigError::InvalidCredentials)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Why a [`PrometheusConfig`] cannot be used. Messages never include secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid Prometheus address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("invalid Prometheus address {address:?}: scheme must be http or https, not {scheme:?}")]
    UnsupportedScheme { address: String, scheme: String },
    #[error("the Prometheus timeout must be positive")]
    ZeroTimeout,
    #[error("invalid HTTP header name {name:?}")]
    InvalidHeaderName { name: String },
    #[error("invalid value for HTTP header {name:?} (control characters or non-visible bytes)")]
    InvalidHeaderValue { name: String },
    #[error("header {name:?} conflicts with the configured authentication; set one or the other")]
    ConflictingAuthorization { name: String },
    #[error("the Prometheus credentials contain characters not allowed in an HTTP header")]
    InvalidCredentials,
    #[error("invalid CA certificate PEM: {reason}")]
    InvalidCaPem { reason: String },
    #[error("cannot build the HTTP client: {message}")]
    BuildClient { message: String },
}

/// A [`MetricsSource`] that queries one Prometheus over HTTP(S).
#[derive(Clone)]
pub struct PrometheusSource {
    client: prometheus_http_query::Client,
    timeout: Duration,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("base_url", &self.client.base_url().as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// Validates `config` and builds its client. Installs rustls' ring provider if the process has none yet
    /// (the binary installs it at start-up; this keeps tests and tools from panicking inside reqwest).
    pub fn new(config: &PrometheusConfig) -> Result<Self, ConfigError> {
        let url = validate_address(&config.address)?;
        if config.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let headers = default_headers(config)?;
        let mut builder =
            reqwest::Client::builder().timeout(config.timeout).connect_timeout(config.timeout).default_headers(headers);
        if let Some(pem) = &config.ca_pem {
            builder = builder.tls_certs_merge(parse_ca_pem(pem)?);
        }
        ensure_crypto_provider();
        let http = builder.build().map_err(|error| ConfigError::BuildClient { message: error_chain(&error) })?;
        let client = prometheus_http_query::Client::from(http, url.as_str()).map_err(|error| {
            ConfigError::InvalidAddress { address: config.address.clone(), reason: error.to_string() }
        })?;
        Ok(Self { client, timeout: config.timeout })
    }

    /// The timeout sent to Prometheus, a little under ours so that Prometheus gives up (and says so) first.
    fn server_timeout_ms(&self) -> i64 {
        let ms = self.timeout.as_millis().min(i64::MAX as u128) as i64;
        (ms - ms / 10).max(1)
    }

    fn map_error(&self, error: prometheus_http_query::Error) -> SourceError {
        map_error(error, self.timeout)
    }
}

fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn validate_address(address: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidAddress { address: address.to_owned(), reason: reason.to_owned() };
    let url = reqwest::Url::parse(address.trim()).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::UnsupportedScheme { address: address.to_owned(), scheme: url.scheme().to_owned() });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query string or fragment"));
    }
    Ok(url)
}

fn default_headers(config: &PrometheusConfig) -> Result<HeaderMap, ConfigError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let header = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ConfigError::InvalidHeaderName { name: name.clone() })?;
        if header == AUTHORIZATION && config.auth.is_some() {
            return Err(ConfigError::ConflictingAuthorization { name: name.clone() });
        }
        let mut value =
            HeaderValue::from_str(value).map_err(|_| ConfigError::InvalidHeaderValue { name: name.clone() })?;
        value.set_sensitive(header == AUTHORIZATION);
        headers.append(header, value);
    }
    if let Some(auth) = &config.auth {
        headers.insert(AUTHORIZATION, auth.header_value()?);
    }
    Ok(headers)
}

fn parse_ca_pem(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let certificates = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|error| ConfigError::InvalidCaPem { reason: error_chain(&error) })?;
    if certificates.is_empty() {
        return Err(ConfigError::InvalidCaPem { reason: "no CERTIFICATE block found".to_owned() });
    }
    Ok(certificates)
}

/// `error: cause: cause`, so that "connection refused" is not hidden behind "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn map_error(error: prometheus_http_query::Error, timeout: Duration) -> SourceError {
    use prometheus_http_query::Error;
    match error {
        Error::Prometheus(e) => {
            SourceError::Prometheus { error_type: e.error_type().to_string(), message: e.message().to_owned() }
        }
        Error::Client(e) => match e.inner() {
            Some(http) if http.is_timeout() => SourceError::Timeout { after: timeout },
            Some(http) if http.is_status() => {
                SourceError::Http { status: http.status().map_or(0, |status| status.as_u16()) }
            }
            Some(http) if http.is_decode() => SourceError::Decode { message: error_chain(&e) },
            // Connection refused or reset, TLS failure, connection closed before a full answer.
            Some(http) if http.is_connect() || http.is_request() || http.is_body() => {
                SourceError::Connect { message: error_chain(http) }
            }
            _ => SourceError::Decode { message: error_chain(&e) },
        },
        other => SourceError::Decode { message: error_chain(&other) },
    }
}

fn one_series<T>(mut series: Vec<T>) -> Result<Option<T>, SourceError> {
    match series.len() {
        0 | 1 => Ok(series.pop()),
        count => Err(SourceError::MultipleSeries { count }),
    }
}

fn to_sample(sample: &prometheus_http_query::response::Sample) -> Result<Sample, SourceError> {
    let time = timestamp_from_seconds(sample.timestamp())
        .ok_or_else(|| SourceError::Decode { message: format!("timestamp {} out of range", sample.timestamp()) })?;
    Ok(Sample::new(time, sample.value()))
}

/// Seconds since the epoch as Prometheus reads them, to the millisecond.
fn prometheus_time(at: Timestamp) -> String {
    let millis = at.as_millisecond();
    format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000))
}

impl MetricsSource for PrometheusSource {
    fn instant<'a>(&'a self, query: &'a str, at: Timestamp) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(async move {
            let answer = self
                .client
                .query(query)
                .query("time", prometheus_time(at))
                .timeout(self.server_timeout_ms())
                .post()
                .await
                .map_err(|error| self.map_error(error))?;
            match answer.into_inner().0 {
                Data::Vector(vector) => one_series(vector)?.map(|v| to_sample(v.sample())).into_iter().collect(),
                Data::Scalar(sample) => Ok(vec![to_sample(&sample)?]),
                Data::Matrix(_) => Err(SourceError::UnexpectedResult { result_type: "range vector" }),
            }
        })
    }

    /// Prometheus' client library takes whole seconds for `start` and `end`: `start` is rounded up and `end` down,
    /// so every returned sample lies within `[start, end]`.
    fn range<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<Sample>, SourceError>> {
        Box::pin(async move {
            range_points(start, end, step)?;
            let start_s =
                start.as_millisecond().div_euclid(1000) + i64::from(start.as_millisecond().rem_euclid(1000) != 0);
            let end_s = end.as_millisecond().div_euclid(1000);
            if start_s > end_s {
                return Ok(vec![]);
            }
            let answer = self
                .client
                .query_range(query, start_s, end_s, step.as_secs_f64())
                .timeout(self.server_timeout_ms())
                .post()
                .await
                .map_err(|error| self.map_error(error))?;
            match answer.into_inner().0 {
                Data::Matrix(matrix) => match one_series(matrix)? {
                    Some(series) => series.samples().iter().map(to_sample).collect(),
                    None => Ok(vec![]),
                },
                Data::Vector(_) => Err(SourceError::UnexpectedResult { result_type: "instant vector" }),
                Data::Scalar(_) => Err(SourceError::UnexpectedResult { result_type: "scalar" }),
            }
        })
    }

    /// The same request as [`MetricsSource::range`], every series kept with its labels.
    fn range_labeled<'a>(
        &'a self,
        query: &'a str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Option<BoxFuture<'a, Result<Vec<super::LabeledSeries>, SourceError>>> {
        Some(Box::pin(async move {
            range_points(start, end, step)?;
            let start_s =
                start.as_millisecond().div_euclid(1000) + i64::from(start.as_millisecond().rem_euclid(1000) != 0);
            let end_s = end.as_millisecond().div_euclid(1000);
            if start_s > end_s {
                return Ok(vec![]);
            }
            let answer = self
                .client
                .query_range(query, start_s, end_s, step.as_secs_f64())
                .timeout(self.server_timeout_ms())
                .post()
                .await
                .map_err(|error| self.map_error(error))?;
            match answer.into_inner().0 {
                Data::Matrix(matrix) => matrix
                    .iter()
                    .map(|series| {
                        let labels = series.metric().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        let samples = series.samples().iter().map(to_sample).collect::<Result<_, _>>()?;
                        Ok(super::LabeledSeries { labels, samples })
                    })
                    .collect(),
                Data::Vector(_) => Err(SourceError::UnexpectedResult { result_type: "instant vector" }),
                Data::Scalar(_) => Err(SourceError::UnexpectedResult { result_type: "scalar" }),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway self-signed CA, only parsed here.
    const CA_PEM: &str = include_str!("testdata/ca.pem");

    fn config(address: &str) -> PrometheusConfig {
        PrometheusConfig::new(address)
    }

    #[test]
    fn valid_configs_build() {
        let mut full = config("https://prometheus.monitoring.svc:9090/prometheus");
        full.auth = Some(Auth::Basic { username: "scaler".into(), password: "s3cret".into() });
        full.headers = vec![("X-Scope-OrgID".into(), "team-a".into())];
        full.ca_pem = Some(CA_PEM.as_bytes().to_vec());
        for config in [config("http://127.0.0.1:9090"), full] {
            assert!(PrometheusSource::new(&config).is_ok(), "{config:?}");
        }
    }

    #[test]
    fn invalid_configs_are_refused_with_a_reason() {
        let bearer = |mut c: PrometheusConfig, token: &str| {
            c.auth = Some(Auth::Bearer(token.into()));
            c
        };
        let header = |mut c: PrometheusConfig, name: &str, value: &str| {
            c.headers.push((name.into(), value.into()));
            c
        };
        let pem = |mut c: PrometheusConfig, pem: &str| {
            c.ca_pem = Some(pem.as_bytes().to_vec());
            c
        };
        let ok = || config("http://prom:9090");
        let cases: Vec<(PrometheusConfig, &str)> = vec![
            (config("prom:9090"), "scheme"),
            (config("not a url"), "invalid Prometheus address"),
            (config("ftp://prom:9090"), "scheme must be http or https"),
            (config("http://prom:9090/?x=1"), "query string"),
            (PrometheusConfig { timeout: Duration::ZERO, ..ok() }, "timeout must be positive"),
            (header(ok(), "bad header", "v"), "invalid HTTP header name \"bad header\""),
            (header(ok(), "X-Tenant", "line\nbreak"), "invalid value for HTTP header \"X-Tenant\""),
            (header(bearer(ok(), "t"), "authorization", "Bearer x"), "conflicts with the configured authentication"),
            (bearer(ok(), "tok\u{7f}en"), "credentials contain characters"),
            (pem(ok(), "not a certificate"), "no CERTIFICATE block"),
            (pem(ok(), "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), "invalid CA certificate PEM"),
        ];
        for (config, expected) in cases {
            let error = PrometheusSource::new(&config).expect_err(expected).to_string();
            assert!(error.contains(expected), "{config:?}: {error}");
        }
    }

    #[test]
    fn errors_never_show_secrets() {
        let mut c = config("http://prom:9090");
        c.auth = Some(Auth::Basic { username: "u".into(), password: "hunter2".into() });
        c.headers.push(("X-Api-Key".into(), "hunter2\n".into()));
        let error = PrometheusSource::new(&c).expect_err("bad header value");
        assert!(!error.to_string().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn times_are_sent_in_seconds_with_milliseconds() {
        let at = Timestamp::from_millisecond(1_700_000_000_250).expect("valid");
        assert_eq!(prometheus_time(at), "1700000000.250");
        let before_epoch = Timestamp::from_millisecond(-1_500).expect("valid");
        assert_eq!(prometheus_time(before_epoch), "-2.500");
    }

    #[test]
    fn server_timeout_is_a_little_under_the_client_timeout() {
        let source = PrometheusSource::new(&config("http://prom:9090")).expect("valid");
        assert_eq!(source.server_timeout_ms(), 4500);
    }
}
