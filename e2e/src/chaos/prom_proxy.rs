//! An HTTP proxy in front of a real Prometheus that answers with injected faults, per namespace or for every
//! query, and logs what it served: the ground truth the soak's invariants are checked against.
//!
//! A query's namespaces are the `namespace="..."` matchers in its PromQL (the built-in templates and the grouped
//! queries carry one); a fault set for a namespace hits every query naming it, a global fault every query.
//! Healthy queries are forwarded as HTTP/1.0 (so Prometheus answers unchunked and closes) and answered with
//! Prometheus' status, type and body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A way for the proxy to answer instead of Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromFault {
    /// Accept, read the request, never answer (the client's timeout ends it).
    Tarpit,
    /// Answer with this HTTP status (500, 502, 503, 429) and a Prometheus error body.
    Status(u16),
    /// A 200 whose body is not a Prometheus answer (truncated JSON, binary noise).
    Garbage,
    /// A 200 whose body is larger than the controller's --max-response-bytes.
    Oversized,
}

impl PromFault {
    /// A short name for fault counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tarpit => "prometheus_tarpit",
            Self::Status(429) => "prometheus_429",
            Self::Status(_) => "prometheus_5xx",
            Self::Garbage => "prometheus_garbage",
            Self::Oversized => "prometheus_oversized",
        }
    }
}

/// How one query was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded, and Prometheus answered 200: the controller got real data.
    Healthy,
    /// Forwarded, and Prometheus answered this status (e.g. 400 for a bad query).
    Upstream(u16),
    /// Prometheus could not be reached (killed); answered 502.
    Unreachable,
    /// Answered with an injected fault.
    Fault(PromFault),
}

/// One answered query.
#[derive(Debug, Clone)]
pub struct Served {
    pub at: Instant,
    pub namespaces: Vec<String>,
    pub outcome: Outcome,
}

#[derive(Default)]
struct Faults {
    global: Option<PromFault>,
    namespaces: HashMap<String, PromFault>,
}

struct ProxyState {
    upstream: SocketAddr,
    oversized_bytes: usize,
    faults: Mutex<Faults>,
    served: Mutex<Vec<Served>>,
    last_healthy: Mutex<HashMap<String, Instant>>,
    namespace_re: regex::Regex,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running proxy; stops when dropped.
pub struct PromChaosProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl PromChaosProxy {
    /// Serves on a free loopback port in front of `upstream`; an oversized answer is `oversized_bytes` long.
    pub async fn start(upstream: SocketAddr, oversized_bytes: usize) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream,
            oversized_bytes,
            faults: Mutex::default(),
            served: Mutex::default(),
            last_healthy: Mutex::default(),
            namespace_re: regex::Regex::new(r#"namespace\s*=\s*"([^"]*)""#).expect("valid regex"),
        });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(%error, "the Prometheus chaos proxy stopped");
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every query (`None`) or the queries of `namespace` get `fault`; `None` as the fault clears it.
    pub fn set_fault(&self, namespace: Option<&str>, fault: Option<PromFault>) {
        let mut faults = lock(&self.state.faults);
        match (namespace, fault) {
            (None, fault) => faults.global = fault,
            (Some(ns), Some(fault)) => {
                faults.namespaces.insert(ns.to_owned(), fault);
            }
            (Some(ns), None) => {
                faults.namespaces.remove(ns);
            }
        }
    }

    /// Clears every fault.
    pub fn clear(&self) {
        *lock(&self.state.faults) = Faults::default();
    }

    /// When Prometheus' real data last reached the controller for a query naming `namespace`.
    pub fn last_healthy(&self, namespace: &str) -> Option<Instant> {
        lock(&self.state.last_healthy).get(namespace).copied()
    }

    /// Everything served so far.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.state.served).clone()
    }
}

impl Drop for PromChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `application/x-www-form-urlencoded` (or a URL query) decoded into pairs.
fn form_pairs(text: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = String::from_utf8_lossy(&body);
    let mut pairs = form_pairs(uri.query().unwrap_or(""));
    pairs.extend(form_pairs(&text));
    let query = pairs.iter().find(|(k, _)| k == "query").map(|(_, v)| v.as_str()).unwrap_or("");
    let mut namespaces: Vec<String> =
        state.namespace_re.captures_iter(query).filter_map(|c| c.get(1)).map(|m| m.as_str().to_owned()).collect();
    namespaces.sort();
    namespaces.dedup();
    let fault = {
        let faults = lock(&state.faults);
        namespaces.iter().find_map(|ns| faults.namespaces.get(ns).copied()).or(faults.global)
    };
    let record = |outcome: Outcome| {
        let at = Instant::now();
        if outcome == Outcome::Healthy {
            let mut last = lock(&state.last_healthy);
            for ns in &namespaces {
                last.insert(ns.clone(), at);
            }
        }
        lock(&state.served).push(Served { at, namespaces: namespaces.clone(), outcome });
    };
    if let Some(fault) = fault {
        record(Outcome::Fault(fault));
        return fault_response(fault, state.oversized_bytes).await;
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    match forward(state.upstream, &method, &uri, content_type.as_deref(), &body).await {
        Some((status, content_type, answer)) => {
            record(if status == 200 { Outcome::Healthy } else { Outcome::Upstream(status) });
            let mut response = Response::new(Body::from(answer));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Some(ct) = content_type.and_then(|ct| ct.parse().ok()) {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        None => {
            record(Outcome::Unreachable);
            (StatusCode::BAD_GATEWAY, "Prometheus is unreachable").into_response()
        }
    }
}

async fn fault_response(fault: PromFault, oversized_bytes: usize) -> Response {
    let json = |status: StatusCode, body: Vec<u8>| {
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    match fault {
        PromFault::Tarpit => {
            tokio::time::sleep(Duration::from_secs(300)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        PromFault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let error_type = if code == 429 { "too_many_requests" } else { "internal" };
            let body = format!(r#"{{"status":"error","errorType":"{error_type}","error":"chaos: injected {code}"}}"#);
            json(status, body.into_bytes())
        }
        PromFault::Garbage => json(
            StatusCode::OK,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":"x"},"values":[[17"#
                .to_vec(),
        ),
        PromFault::Oversized => {
            let head = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":""#;
            let mut body = Vec::with_capacity(oversized_bytes + 64);
            body.extend_from_slice(head);
            body.resize(oversized_bytes, b'x');
            body.extend_from_slice(br#""},"values":[]}]}}"#);
            json(StatusCode::OK, body)
        }
    }
}

/// The request to Prometheus as HTTP/1.0; `None` when it cannot be reached or answers nothing in 10 s.
async fn forward(
    upstream: SocketAddr,
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<(u16, Option<String>, Vec<u8>)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await.ok()?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {upstream}\r\nContent-Length: {}\r\n", body.len());
        if let Some(ct) = content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        stream.write_all(body).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let content_type = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
        });
        Some((status, content_type, answer[split + 4..].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_with_plus_and_percent() {
        let pairs = form_pairs("query=sum%28x%7Bnamespace%3D%22ns-1%22%7D%29+by+%28pod%29&start=1");
        assert_eq!(pairs[0], ("query".into(), r#"sum(x{namespace="ns-1"}) by (pod)"#.into()));
        assert_eq!(pairs[1], ("start".into(), "1".into()));
        assert_eq!(form_pairs("a=%zz%4"), vec![("a".into(), "%zz%4".into())]);
    }
}
