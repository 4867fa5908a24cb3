//! The Prometheus [`MetricsSource`]: our own `reqwest` requests, decoded into `prometheus-http-query`'s types.
//!
//! The client is ours so that we control the per-query timeout, authentication, extra headers and extra root CAs.
//! The request is ours too so that the answer is streamed and cut off at [`Limits::max_response_bytes`] (a
//! hostile or broken server cannot make the controller buffer hundreds of megabytes), and so that nothing but a
//! status code and Prometheus' own bounded, sanitised error message ever comes back from a server.
//! The configuration is plain data: the controller resolves Secrets and ConfigMaps into it before it gets here.

use super::memory::range_points;
use super::{MetricsSource, Sample, SourceError, timestamp_from_seconds};
use base64::Engine as _;
use futures::future::BoxFuture;
use jiff::Timestamp;
use prometheus_http_query::response::{Data, PromqlResult};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// The default per-query timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest Prometheus error message kept (in status, events and logs).
pub const MAX_ERROR_MESSAGE: usize = 256;

/// How much of an answer the controller is willing to read and decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// The largest response body read, after decompression. Reading stops at this many bytes.
    pub max_response_bytes: usize,
    /// The most series one answer may hold. A per-policy query uses one; a grouped query holds a series per pod
    /// of the namespace (per pod and bucket for a histogram).
    pub max_series: usize,
}

impl Limits {
    /// 4 MiB: a week of 5-minute points is about 60 KiB, and 16 answers decoded at once stay far below the
    /// chart's 256Mi memory limit (a decoded answer takes about three times its size).
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
    /// 10,000: a grouped histogram query of a namespace with 500 pods and 20 buckets; the byte limit still bounds
    /// the memory an answer can take.
    pub const DEFAULT_MAX_SERIES: usize = 10_000;
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES, max_series: Self::DEFAULT_MAX_SERIES }
    }
}

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
    /// How much of an answer is read.
    pub limits: Limits,
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
            .field("limits", &self.limits)
            .finish()
    }
}

impl PrometheusConfig {
    /// A config for `address` with the default timeout and nothing else.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            timeout: DEFAULT_TIMEOUT,
            auth: None,
            headers: Vec::new(),
            ca_pem: None,
            limits: Limits::default(),
        }
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
    http: reqwest::Client,
    base: reqwest::Url,
    timeout: Duration,
    limits: Limits,
}

impl std::fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("base_url", &self.base.as_str())
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
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
        // No redirects: an allowed address must not be able to bounce the query (and its headers) elsewhere.
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers);
        if let Some(pem) = &config.ca_pem {
            builder = builder.tls_certs_merge(parse_ca_pem(pem)?);
        }
        ensure_crypto_provider();
        let http = builder.build().map_err(|error| ConfigError::BuildClient { message: error_chain(&error) })?;
        let mut base = url;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self { http, base, timeout: config.timeout, limits: config.limits })
    }

    /// POSTs `form` to `api/v1/<endpoint>` and decodes the answer, reading at most the configured bytes.
    async fn post(&self, endpoint: &str, form: &[(&str, String)]) -> Result<Data, SourceError> {
        let url = self.base.join(endpoint).map_err(|e| SourceError::Decode { message: e.to_string() })?;
        let response = self.http.post(url).form(form).send().await.map_err(|e| transport_error(&e, self.timeout))?;
        let status = response.status();
        let body = read_limited(response, self.limits.max_response_bytes, self.timeout).await?;
        decode(status, &body, self.limits.max_series)
    }

    /// A range query. Prometheus' client library takes whole seconds for `start` and `end`: `start` is rounded
    /// up and `end` down, so every returned sample lies within `[start, end]`; `None` when no whole second does.
    async fn query_range(
        &self,
        query: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Option<Data>, SourceError> {
        range_points(start, end, step)?;
        let start_s = start.as_millisecond().div_euclid(1000) + i64::from(start.as_millisecond().rem_euclid(1000) != 0);
        let end_s = end.as_millisecond().div_euclid(1000);
        if start_s > end_s {
            return Ok(None);
        }
        let form = [
            ("query", query.to_owned()),
            ("start", start_s.to_string()),
            ("end", end_s.to_string()),
            ("step", step.as_secs_f64().to_string()),
            ("timeout", format!("{}ms", self.server_timeout_ms())),
        ];
        self.post("api/v1/query_range", &form).await.map(Some)
    }

    /// The timeout sent to Prometheus, a little under ours so that Prometheus gives up (and says so) first.
    fn server_timeout_ms(&self) -> i64 {
        let ms = self.timeout.as_millis().min(i64::MAX as u128) as i64;
        (ms - ms / 10).max(1)
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

/// A failure before any answer: the connection, the TLS handshake, or our own timeout.
fn transport_error(error: &reqwest::Error, timeout: Duration) -> SourceError {
    if error.is_timeout() {
        SourceError::Timeout { after: timeout }
    } else {
        // Connection refused or reset, TLS failure, connection closed before a full answer.
        SourceError::Connect { message: connect_message(error) }
    }
}

/// `connection refused (127.0.0.1:9090)` when the root cause is a socket error, rather than the whole chain
/// (`error sending request for url (http://...): client error (Connect): tcp connect error: Connection refused
/// (os error 111)`): the same words for every query to that server, so that status says them once.
fn connect_message(error: &reqwest::Error) -> String {
    let mut io = None;
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        if let Some(e) = cause.downcast_ref::<std::io::Error>() {
            io = Some(e);
        }
        source = cause.source();
    }
    let (Some(io), Some(url)) = (io, error.url()) else {
        return error_chain(error);
    };
    let text = io.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let text = match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(text.chars().skip(1)).collect()
        }
        _ => text.to_string(),
    };
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{text} ({host}:{port})"),
        _ => error_chain(error),
    }
}

/// Reads the body chunk by chunk and stops as soon as it would exceed `limit`: the rest is never read.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, SourceError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(SourceError::ResponseTooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(&e, timeout))? {
        if body.len() + chunk.len() > limit {
            return Err(SourceError::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JSON envelope of every Prometheus API answer.
#[derive(serde::Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<PromqlResult>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Decodes an answer. A server's body is never copied into an error, except Prometheus' own error message
/// (bounded and stripped of control characters): anything else is reported by its status code.
fn decode(status: reqwest::StatusCode, body: &[u8], max_series: usize) -> Result<Data, SourceError> {
    let envelope = serde_json::from_slice::<Envelope>(body);
    match envelope {
        Ok(Envelope { status: s, error_type: Some(error_type), error, .. }) if s == "error" => {
            Err(SourceError::Prometheus {
                error_type: sanitise(&error_type, 32),
                message: sanitise(error.as_deref().unwrap_or_default(), MAX_ERROR_MESSAGE),
            })
        }
        _ if !status.is_success() => Err(SourceError::Http { status: status.as_u16() }),
        Ok(Envelope { status: s, data: Some(result), .. }) if s == "success" => {
            let data = result.into_inner().0;
            let count = match &data {
                Data::Vector(v) => v.len(),
                Data::Matrix(m) => m.len(),
                Data::Scalar(_) => 1,
            };
            if count > max_series {
                return Err(SourceError::TooManySeries { count, limit: max_series });
            }
            Ok(data)
        }
        Ok(_) => Err(SourceError::Decode { message: "not a Prometheus query answer".to_owned() }),
        // serde's message names the position and the expected token, never the content.
        Err(error) => Err(SourceError::Decode { message: format!("invalid JSON: {error}") }),
    }
}

/// At most `max` characters of `text`, control characters replaced by spaces.
pub(crate) fn sanitise(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
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
            let form = [
                ("query", query.to_owned()),
                ("time", prometheus_time(at)),
                ("timeout", format!("{}ms", self.server_timeout_ms())),
            ];
            match self.post("api/v1/query", &form).await? {
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
            let Some(answer) = self.query_range(query, start, end, step).await? else { return Ok(vec![]) };
            match answer {
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
            let Some(answer) = self.query_range(query, start, end, step).await? else { return Ok(vec![]) };
            match answer {
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

    /// A loopback server that answers one request with `head` and then streams `body_bytes` of JSON-ish filler
    /// until the client hangs up. Returns its address and a handle giving how many body bytes it wrote.
    fn streaming_server(head: String, body_bytes: usize) -> (String, std::thread::JoinHandle<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return 0,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            if stream.write_all(head.as_bytes()).is_err() {
                return 0;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0;
            while written < body_bytes {
                match stream.write(&chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => written += n,
                }
            }
            written
        });
        (address, handle)
    }

    const HUGE: usize = 250 * 1024 * 1024;

    /// Waits for the server thread without blocking the runtime (the client's connection task must run to
    /// close the connection the server is writing to).
    async fn written(server: std::thread::JoinHandle<usize>) -> usize {
        for _ in 0..3000 {
            if server.is_finished() {
                return server.join().expect("server");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server is still writing after 30 s: the controller kept reading");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_cut_off_while_reading() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_owned();
        let (address, server) = streaming_server(head, HUGE);
        let mut c = config(&address);
        c.limits.max_response_bytes = 1024 * 1024;
        let source = PrometheusSource::new(&c).expect("valid");
        let error = source.instant("up", Timestamp::UNIX_EPOCH).await.expect_err("too large");
        assert_eq!(error, SourceError::ResponseTooLarge { limit: 1024 * 1024 });
        drop(source);
        let written = written(server).await;
        eprintln!("the server wrote {written} bytes of a {HUGE}-byte answer before the controller hung up");
        // The server could only write what the socket buffers took beyond the 1 MiB read: far from 250 MB.
        assert!(written < 32 * 1024 * 1024, "the controller read {written} bytes of a 250 MB answer");
    }

    #[tokio::test]
    async fn an_announced_oversized_answer_is_refused_before_reading() {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n");
        let (address, server) = streaming_server(head, HUGE);
        let source = PrometheusSource::new(&config(&address)).expect("valid");
        let error = source.instant("up", Timestamp::UNIX_EPOCH).await.expect_err("too large");
        assert!(matches!(error, SourceError::ResponseTooLarge { .. }), "{error}");
        drop(source);
        assert!(written(server).await < 32 * 1024 * 1024);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (elsewhere, other) = streaming_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_owned(), 0);
        let head = format!("HTTP/1.1 302 Found\r\nLocation: {elsewhere}/api/v1/query\r\nContent-Length: 0\r\n\r\n");
        let (address, server) = streaming_server(head, 0);
        let source = PrometheusSource::new(&config(&address)).expect("valid");
        let error = source.instant("up", Timestamp::UNIX_EPOCH).await.expect_err("a redirect is not an answer");
        assert_eq!(error, SourceError::Http { status: 302 });
        written(server).await;
        assert!(!other.is_finished(), "the redirect target was contacted");
    }

    #[test]
    fn a_servers_body_never_reaches_status_except_a_bounded_prometheus_message() {
        use reqwest::StatusCode;
        // Not Prometheus (an attacker's listener, a proxy page): only the status code.
        let page = b"<html>root:x:0:0:secret-content</html>";
        let error = decode(StatusCode::FORBIDDEN, page, 100).expect_err("not an answer");
        assert_eq!(error, SourceError::Http { status: 403 });
        let error = decode(StatusCode::OK, page, 100).expect_err("not an answer");
        assert!(!error.to_string().contains("secret-content"), "{error}");
        // Prometheus' own error: kept, but bounded and without control characters.
        let long = format!(
            r#"{{"status":"error","errorType":"bad_data","error":"parse error\n\u001b[31m{}"}}"#,
            "x".repeat(5000)
        );
        let error = decode(StatusCode::BAD_REQUEST, long.as_bytes(), 100).expect_err("prometheus error");
        let SourceError::Prometheus { error_type, message } = error else { panic!("{error:?}") };
        assert_eq!(error_type, "bad_data");
        assert!(message.starts_with("parse error"), "{message}");
        assert!(message.chars().count() <= MAX_ERROR_MESSAGE + 1, "{} chars", message.chars().count());
        assert!(!message.chars().any(char::is_control), "{message:?}");
    }

    #[test]
    fn answers_with_more_series_than_the_limit_are_refused() {
        let series = r#"{"metric":{},"value":[1,"1"]}"#;
        let body =
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, [series; 5].join(","));
        let error = decode(reqwest::StatusCode::OK, body.as_bytes(), 3).expect_err("too many");
        assert_eq!(error, SourceError::TooManySeries { count: 5, limit: 3 });
        assert!(decode(reqwest::StatusCode::OK, body.as_bytes(), 5).is_ok());
    }

    #[test]
    fn server_timeout_is_a_little_under_the_client_timeout() {
        let source = PrometheusSource::new(&config("http://prom:9090")).expect("valid");
        assert_eq!(source.server_timeout_ms(), 4500);
    }
}
