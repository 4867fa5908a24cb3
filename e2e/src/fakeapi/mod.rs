//! A resource-generic fake Kubernetes API server, for running the real kube `Client`, kube-runtime's
//! `Controller`, watchers and event `Recorder`, kube-lease-manager and `kubectl` where no cluster can run.
//!
//! It keeps the behaviours controllers depend on: resourceVersion conflicts, `/status` and `/scale`
//! subresources, generation, watch replay and 410 Gone after [`FakeApiServer::compact`], streaming lists,
//! server-side apply field conflicts, finalizers, CRD registration with schema pruning/defaulting/validation,
//! OpenAPI v3 documents of the installed CRDs (for `kubectl explain`), and `Status` error bodies worded like
//! kube-apiserver's.
//!
//! ```text
//!  kube::Client ──(in-process tower service)──┐
//!  kubectl / foresight ──(http://127.0.0.1:N)─┤
//!                                             ▼
//!   handlers (URL → verb) ── faults/request log
//!      │          │            │
//!   discovery   ops (create/update/patch/delete/scale, admission, ownership)   watch (replay, live)
//!                 └──────────────── store (objects, resourceVersion, event log) ──┘
//! ```
//!
//! Known simplifications are documented in the module that makes them: [`patch`] (strategic merge),
//! [`ownership`] (apply), [`schema`] (structural subset), [`admission`] (few built-in rules; CEL via kube-cel, ratcheting per rule), [`ops`] (namespace deletion,
//! no garbage collector). Beyond those:
//! * JSON (and YAML) only: protobuf/CBOR bodies get 415, so kubectl's imperative generators
//!   (`kubectl create deployment`, `kubectl run`) fail; `kubectl create/apply -f`, `scale`, `patch`, `get` work.
//! * `events.k8s.io/v1` and core `v1` Events are stored separately (the real server shares one storage):
//!   `kubectl get events.events.k8s.io` shows what kube-runtime's `Recorder` publishes.
//! * No controllers run (Deployments get no ReplicaSets or Pods) unless
//!   [`FakeApiServerBuilder::simulate_workload_controllers`] is on; no admission webhooks, RBAC or auth.
//! * `limit`/`continue` are accepted but every list is returned in one page.

pub mod admission;
pub mod discovery;
pub mod errors;
pub mod faults;
pub mod fixtures;
pub mod handlers;
pub mod kubeconfig;
pub mod objects;
pub mod openapi;
pub mod ops;
pub mod ownership;
pub mod patch;
pub mod render;
pub mod requests;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod store;
pub mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use errors::ApiError;
pub use faults::{Fault, RecordedRequest};
pub use kubeconfig::KubeconfigError;
pub use requests::RequestCounts;
pub use resources::{ApiResourceSpec, PrinterColumn, ScaleSpec};

use faults::Faults;
use ops::{Sub, WriteOpts};
use resources::{Registry, builtin_kinds};
use store::{ObjKey, Store};

/// Locks a mutex, recovering the data if a panicking thread poisoned it (a test failure elsewhere must not
/// turn every later request into a panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tunables that are not resource kinds.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
    /// Whether every request is kept, with its body, for [`FakeApiServer::requests`].
    pub record_requests: bool,
}

/// State shared by the HTTP handlers.
pub(crate) struct Inner {
    pub store: Mutex<Store>,
    pub faults: Mutex<Faults>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub request_counts: Mutex<RequestCounts>,
    pub config: ServerConfig,
}

/// The TCP listeners of one server; aborted when the last [`FakeApiServer`] handle is dropped.
struct Listeners {
    tasks: Mutex<Vec<JoinHandle<()>>>,
    addr: Mutex<Option<SocketAddr>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

/// Group, version and plural of a resource, for the test hooks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gvr {
    /// API group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
}

impl Gvr {
    /// A GVR from its parts.
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Self { group: group.into(), version: version.into(), plural: plural.into() }
    }

    /// The GVR of a k8s-openapi or `#[derive(CustomResource)]` type.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Self {
        Self::new(&K::group(&()), &K::version(&()), &K::plural(&()))
    }
}

/// Builds a [`FakeApiServer`].
#[derive(Debug, Clone)]
pub struct FakeApiServerBuilder {
    kinds: Vec<ApiResourceSpec>,
    namespaces: Vec<String>,
    bookmark_interval: Duration,
    default_watch_timeout: Duration,
    simulate_workloads: bool,
    record_requests: bool,
}

impl Default for FakeApiServerBuilder {
    fn default() -> Self {
        Self {
            kinds: builtin_kinds(),
            namespaces: ["default", "kube-system", "kube-public", "kube-node-lease"].map(String::from).to_vec(),
            bookmark_interval: Duration::from_secs(2),
            default_watch_timeout: Duration::from_secs(1800),
            simulate_workloads: false,
            record_requests: true,
        }
    }
}

impl FakeApiServerBuilder {
    /// Serves an extra kind (as if its CRD were installed, without a CRD object).
    pub fn with_kind(mut self, spec: ApiResourceSpec) -> Self {
        self.kinds.retain(|k| !(k.group == spec.group && k.plural == spec.plural));
        self.kinds.push(spec);
        self
    }

    /// Creates this namespace at start (besides `default`, `kube-system`, `kube-public`, `kube-node-lease`).
    pub fn with_namespace(mut self, name: &str) -> Self {
        self.namespaces.push(name.to_string());
        self
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (default 2 s).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }

    /// Watch duration when the client sends no `timeoutSeconds` (default 30 min, as kube-apiserver).
    pub fn default_watch_timeout(mut self, timeout: Duration) -> Self {
        self.default_watch_timeout = timeout;
        self
    }

    /// After every write to a Deployment/StatefulSet/ReplicaSet, write its status as a converged workload
    /// controller would (`replicas`, `readyReplicas`, `availableReplicas`, `updatedReplicas` = `spec.replicas`,
    /// `observedGeneration`), as a separate MODIFIED event. Off by default.
    pub fn simulate_workload_controllers(mut self, on: bool) -> Self {
        self.simulate_workloads = on;
        self
    }

    /// Whether the server keeps every request, body included, for [`FakeApiServer::requests`] (on by default).
    /// A long-running server with no test reading the log turns it off: the log grows with every request.
    /// `/metrics` counts requests either way.
    pub fn record_requests(mut self, on: bool) -> Self {
        self.record_requests = on;
        self
    }

    /// The server.
    pub fn build(self) -> FakeApiServer {
        let mut store = Store::new(Registry::new(self.kinds));
        store.simulate_workloads = self.simulate_workloads;
        let ns_spec = store.registry.find_any_version("", "namespaces").cloned();
        if let Some(ns_spec) = ns_spec {
            for name in &self.namespaces {
                let body = json!({"metadata": {"name": name}});
                let opts = WriteOpts { field_manager: "fake-apiserver".into(), ..Default::default() };
                // A duplicate namespace in the builder is harmless: the first one wins.
                let _ = ops::create(&mut store, &ns_spec, "v1", "", body, &opts, None);
            }
        }
        let inner = Arc::new(Inner {
            store: Mutex::new(store),
            faults: Mutex::new(Faults::default()),
            requests: Mutex::new(Vec::new()),
            request_counts: Mutex::new(RequestCounts::default()),
            config: ServerConfig {
                bookmark_interval: self.bookmark_interval,
                default_watch_timeout: self.default_watch_timeout,
                record_requests: self.record_requests,
            },
        });
        FakeApiServer {
            inner,
            listeners: Arc::new(Listeners { tasks: Mutex::new(Vec::new()), addr: Mutex::new(None) }),
        }
    }
}

/// The fake API server. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeApiServer {
    inner: Arc<Inner>,
    listeners: Arc<Listeners>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.addr()).finish_non_exhaustive()
    }
}

/// The field manager the test hooks write as.
const HOOK_MANAGER: &str = "fake-apiserver-test-hook";

impl FakeApiServer {
    /// A server with the built-in kinds and the standard namespaces.
    pub fn new() -> Self {
        FakeApiServerBuilder::default().build()
    }

    /// A builder to add kinds, namespaces and tunables.
    pub fn builder() -> FakeApiServerBuilder {
        FakeApiServerBuilder::default()
    }

    /// The axum router (a tower service) serving the API.
    pub fn router(&self) -> axum::Router {
        handlers::router(self.inner.clone())
    }

    /// A kube `Client` talking to this server in-process, default namespace `default`.
    /// Must be called inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// Serves over HTTP on `127.0.0.1:<free port>` until the last handle is dropped; returns the address.
    pub async fn serve_tcp(&self) -> std::io::Result<SocketAddr> {
        self.serve_tcp_at(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves over HTTP on `addr` (port 0 picks a free one) until the last handle is dropped.
    pub async fn serve_tcp_at(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(error = %e, "fake API server stopped serving");
            }
        });
        lock(&self.listeners.tasks).push(task);
        *lock(&self.listeners.addr) = Some(addr);
        Ok(addr)
    }

    /// The address of the latest [`serve_tcp`](Self::serve_tcp), if any.
    pub fn addr(&self) -> Option<SocketAddr> {
        *lock(&self.listeners.addr)
    }

    /// Writes a kubeconfig (plain http, context `fake`, namespace `default`) for the TCP address.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), KubeconfigError> {
        let addr = self.addr().ok_or(KubeconfigError::NotServing)?;
        kubeconfig::write(addr, path.as_ref())
    }

    /// Serves a new kind (or replaces one with the same group and plural).
    pub fn register(&self, spec: ApiResourceSpec) {
        lock(&self.inner.store).registry.register(spec);
    }

    /// Drops the watch event log: resuming a watch from any older resourceVersion now yields 410 Gone.
    pub fn compact(&self) {
        lock(&self.inner.store).compact();
    }

    /// The latest resourceVersion.
    pub fn current_resource_version(&self) -> u64 {
        lock(&self.inner.store).current_rv()
    }

    /// Makes matching requests fail (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        lock(&self.inner.faults).add(fault);
    }

    /// Removes all injected faults.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// The requests received since the last call (or the start), removed from the log: a poller never sees
    /// one twice or misses one between reading and clearing.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *lock(&self.inner.requests))
    }

    fn spec_for(store: &Store, gvr: &Gvr) -> Result<ApiResourceSpec, ApiError> {
        store.registry.find(&gvr.group, &gvr.version, &gvr.plural).cloned().ok_or_else(ApiError::no_such_path)
    }

    /// The stored object, as JSON in the GVR's version.
    pub fn get_json(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Option<Value> {
        let store = lock(&self.inner.store);
        let spec = Self::spec_for(&store, gvr).ok()?;
        let key = ObjKey::new(&gvr.group, &gvr.plural, namespace.unwrap_or(""), name);
        store.get(&key).map(|s| render::object(&spec, &gvr.version, &s.value))
    }

    /// All stored objects of a kind (in one namespace or all).
    pub fn list_json(&self, gvr: &Gvr, namespace: Option<&str>) -> Vec<Value> {
        let store = lock(&self.inner.store);
        let Ok(spec) = Self::spec_for(&store, gvr) else {
            return Vec::new();
        };
        store
            .list(&gvr.group, &gvr.plural, namespace)
            .into_iter()
            .map(|(_, s)| render::object(&spec, &gvr.version, &s.value))
            .collect()
    }

    /// Creates or unconditionally replaces an object (whatever `resourceVersion` it carries), as another
    /// client would; goes through the same admission, generation and watch logic as API requests. Status is
    /// only written through [`set_status`](Self::set_status) when the kind has a status subresource.
    pub fn put_json(&self, gvr: &Gvr, namespace: Option<&str>, mut obj: Value) -> Result<Value, ApiError> {
        let mut store = lock(&self.inner.store);
        let spec = Self::spec_for(&store, gvr)?;
        let ns = namespace.unwrap_or("");
        let name = objects::meta_nonempty(&obj, "name").map(str::to_string);
        let opts = WriteOpts { field_manager: HOOK_MANAGER.into(), ..Default::default() };
        let current_rv = name
            .as_ref()
            .and_then(|n| store.get(&ObjKey::new(&gvr.group, &gvr.plural, ns, n)))
            .and_then(|s| objects::meta_str(&s.value, "resourceVersion").map(str::to_string));
        if let Some(meta) = objects::meta_mut(&mut obj) {
            match &current_rv {
                Some(rv) => meta.insert("resourceVersion".into(), json!(rv)),
                None => meta.remove("resourceVersion"),
            };
        }
        match name {
            Some(name) if current_rv.is_some() => {
                ops::update(&mut store, &spec, &gvr.version, ns, &name, obj, Sub::Main, &opts, None)
            }
            _ => ops::create(&mut store, &spec, &gvr.version, ns, obj, &opts, None),
        }
    }

    /// Replaces `.status` of an object unconditionally, as its controller would through `/status`.
    pub fn set_status(&self, gvr: &Gvr, namespace: Option<&str>, name: &str, status: Value) -> Result<Value, ApiError> {
        let mut store = lock(&self.inner.store);
        let spec = Self::spec_for(&store, gvr)?;
        let opts = WriteOpts { field_manager: HOOK_MANAGER.into(), ..Default::default() };
        let sub = if spec.status_subresource { Sub::Status } else { Sub::Main };
        let ns = namespace.unwrap_or("");
        let key = ObjKey::new(&gvr.group, &gvr.plural, ns, name);
        // The current object (with its resourceVersion) carrying the new status.
        let mut body = store
            .get(&key)
            .map(|s| s.value.clone())
            .ok_or_else(|| ApiError::not_found(&gvr.group, &gvr.plural, name))?;
        objects::set_at(&mut body, ".status", status);
        ops::update(&mut store, &spec, &gvr.version, ns, name, body, sub, &opts, None)
    }

    /// Sets the desired replicas through `/scale`, as `kubectl scale` or another autoscaler would.
    pub fn set_replicas_externally(
        &self,
        gvr: &Gvr,
        namespace: Option<&str>,
        name: &str,
        replicas: i64,
    ) -> Result<Value, ApiError> {
        let mut store = lock(&self.inner.store);
        let spec = Self::spec_for(&store, gvr)?;
        let opts = WriteOpts { field_manager: HOOK_MANAGER.into(), ..Default::default() };
        let body = json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": replicas}});
        ops::update_scale(&mut store, &spec, &gvr.version, namespace.unwrap_or(""), name, &body, &opts)
    }

    /// Creates a namespace (no-op if it exists).
    pub fn create_namespace(&self, name: &str) -> Result<(), ApiError> {
        let gvr = Gvr::new("", "v1", "namespaces");
        if self.get_json(&gvr, None, name).is_some() {
            return Ok(());
        }
        self.put_json(&gvr, None, json!({"metadata": {"name": name}})).map(|_| ())
    }

    /// Field managers of an object: (manager, is-apply, owned fields such as `.spec.replicas`).
    pub fn field_managers(&self, gvr: &Gvr, namespace: Option<&str>, name: &str) -> Vec<(String, bool, Vec<String>)> {
        let store = lock(&self.inner.store);
        store
            .get(&ObjKey::new(&gvr.group, &gvr.plural, namespace.unwrap_or(""), name))
            .map(|s| s.owners.managers())
            .unwrap_or_default()
    }
}
