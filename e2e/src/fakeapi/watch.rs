//! Watches: newline-delimited JSON `WatchEvent`s with the real server's semantics.
//!
//! * `resourceVersion` absent or `"0"`: synthetic ADDED for every current object, then changes.
//! * `resourceVersion=N`: every change after N from the event log; N older than the compaction point gets a single
//!   ERROR event carrying a 410 `Expired` Status (kube-runtime's watcher then re-lists).
//! * `sendInitialEvents=true` (streaming lists): ADDED for all, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"`.
//! * Label/field selectors: an object that starts matching arrives as ADDED, one that stops matching as DELETED.
//! * BOOKMARKs at a fixed interval when `allowWatchBookmarks=true`; the stream ends at `timeoutSeconds`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::errors::ApiError;
use super::render::{self, Representation};
use super::resources::ApiResourceSpec;
use super::selectors::{FieldSelector, LabelSelector, labels_of};
use super::store::{EventType, Store, WatchRecord};

/// What one watch asks for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The kind watched and the version it is served in.
    pub spec: ApiResourceSpec,
    /// Served version of the request.
    pub version: String,
    /// Namespace, or None for all namespaces.
    pub namespace: Option<String>,
    /// `resourceVersion` as sent.
    pub resource_version: Option<String>,
    /// `sendInitialEvents=true`.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub allow_bookmarks: bool,
    /// When the server ends the stream.
    pub timeout: Duration,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// Full objects or metadata only.
    pub repr: Representation,
    /// How often to send BOOKMARKs.
    pub bookmark_interval: Duration,
}

impl WatchRequest {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels_of(obj)) && self.fields.matches(obj)
    }

    fn render(&self, obj: &Value) -> Value {
        match self.repr {
            Representation::Metadata => render::metadata_only(obj),
            _ => render::object(&self.spec, &self.version, obj),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let (kind, api_version) = match self.repr {
            Representation::Metadata => ("PartialObjectMetadata".to_string(), "meta.k8s.io/v1".to_string()),
            _ => (self.spec.kind.clone(), self.spec.api_version(&self.version)),
        };
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}})
    }

    /// The event a committed change means for this watch, if any.
    fn translate(&self, rec: &WatchRecord) -> Option<Value> {
        if rec.key.group != self.spec.group || rec.key.plural != self.spec.plural {
            return None;
        }
        if self.namespace.as_deref().is_some_and(|ns| ns != rec.key.namespace) {
            return None;
        }
        let now = self.matches(&rec.object);
        let event = match rec.event {
            EventType::Added | EventType::Deleted if now => rec.event,
            EventType::Modified => match (rec.previous.as_ref().is_some_and(|p| self.matches(p)), now) {
                (true, true) => EventType::Modified,
                (false, true) => EventType::Added,
                (true, false) => EventType::Deleted,
                (false, false) => return None,
            },
            _ => return None,
        };
        Some(json!({"type": event.as_str(), "object": self.render(&rec.object)}))
    }
}

fn error_event(err: &ApiError) -> Value {
    json!({"type": "ERROR", "object": err.to_status()})
}

/// A watch that has been set up under the store lock and can now stream without it.
pub struct OpenWatch {
    req: WatchRequest,
    pending: VecDeque<Value>,
    rx: Option<broadcast::Receiver<Arc<WatchRecord>>>,
    last_rv: u64,
}

/// Sets a watch up: computes its initial events and subscribes to later ones atomically.
pub fn open(store: &Store, req: WatchRequest) -> Result<OpenWatch, ApiError> {
    let rv = match req.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => {
            Some(s.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?)
        }
    };
    let current = store.current_rv();
    let mut pending = VecDeque::new();
    if req.send_initial_events || rv.is_none() {
        for (_, stored) in store.list(&req.spec.group, &req.spec.plural, req.namespace.as_deref()) {
            if req.matches(&stored.value) {
                pending.push_back(json!({"type": "ADDED", "object": req.render(&stored.value)}));
            }
        }
        if req.send_initial_events {
            pending.push_back(req.bookmark(current, true));
        }
        let rx = store.subscribe();
        return Ok(OpenWatch { req, pending, rx: Some(rx), last_rv: current });
    }
    let from = rv.unwrap_or(current);
    match store.replay_from(from, &req.spec.group, &req.spec.plural) {
        None => {
            let err = ApiError::expired(format!("too old resource version: {from} ({})", store.compacted_rv()));
            pending.push_back(error_event(&err));
            Ok(OpenWatch { req, pending, rx: None, last_rv: from })
        }
        Some((records, rx)) => {
            for rec in &records {
                if let Some(ev) = req.translate(rec) {
                    pending.push_back(ev);
                }
            }
            Ok(OpenWatch { req, pending, rx: Some(rx), last_rv: current.max(from) })
        }
    }
}

fn line(v: &Value) -> Result<Bytes, Infallible> {
    let mut s = v.to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

impl OpenWatch {
    /// The body stream: initial events, then live ones, until the timeout, a lag, or server shutdown.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let deadline = Instant::now() + self.req.timeout;
        let next_bookmark = Instant::now() + self.req.bookmark_interval;
        futures::stream::unfold((self, deadline, next_bookmark), |(mut w, deadline, mut next_bookmark)| async move {
            loop {
                if let Some(ev) = w.pending.pop_front() {
                    return Some((line(&ev), (w, deadline, next_bookmark)));
                }
                let rx = w.rx.as_mut()?;
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    _ = tokio::time::sleep_until(next_bookmark), if w.req.allow_bookmarks => {
                        next_bookmark = Instant::now() + w.req.bookmark_interval;
                        w.pending.push_back(w.req.bookmark(w.last_rv, false));
                    }
                    received = rx.recv() => match received {
                        Ok(rec) => {
                            if rec.rv <= w.last_rv {
                                continue;
                            }
                            if let Some(ev) = w.req.translate(&rec) {
                                w.pending.push_back(ev);
                            }
                            // Like the watch cache, bookmarks carry the store's latest resourceVersion.
                            w.last_rv = rec.rv;
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let err = ApiError::expired("too old resource version: watch fell behind");
                            w.pending.push_back(error_event(&err));
                            w.rx = None;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        })
    }
}
