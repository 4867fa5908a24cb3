//! The fake's etcd: objects keyed by group/resource/namespace/name (one storage per resource, shared by all
//! its served versions, as in kube-apiserver), a single monotonic resourceVersion counter, and the event log
//! that watches replay from. Every write goes through [`Store::write`] or [`Store::remove`], which stamp the
//! new resourceVersion, append a [`WatchRecord`] and broadcast it to open watches.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::ownership::FieldOwners;
use super::resources::Registry;

/// Where an object lives. `namespace` is empty for cluster-scoped objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// API group, empty for core.
    pub group: String,
    /// Resource plural.
    pub plural: String,
    /// Namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjKey {
    /// A key from its parts.
    pub fn new(group: &str, plural: &str, namespace: &str, name: &str) -> Self {
        Self { group: group.into(), plural: plural.into(), namespace: namespace.into(), name: name.into() }
    }
}

/// A stored object and who owns its fields.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The object as JSON (storage version).
    pub value: Value,
    /// Field managers, for server-side apply.
    pub owners: FieldOwners,
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug, Clone)]
pub struct WatchRecord {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Where the object lives.
    pub key: ObjKey,
    /// What happened.
    pub event: EventType,
    /// The object after the change (for DELETED: the last state, stamped with the deletion's resourceVersion).
    pub object: Value,
    /// The object before a MODIFIED change, so selector watches can turn it into ADDED/DELETED.
    pub previous: Option<Value>,
}

/// Records replayed to a new watch, and the receiver for the changes after them.
pub type Replay = (Vec<Arc<WatchRecord>>, broadcast::Receiver<Arc<WatchRecord>>);

/// How many records the log keeps before it compacts itself.
const DEFAULT_LOG_CAPACITY: usize = 50_000;

/// The fake's whole state, behind one mutex in the server.
#[derive(Debug)]
pub struct Store {
    /// Served kinds.
    pub registry: Registry,
    objects: BTreeMap<ObjKey, Stored>,
    rv: u64,
    log: VecDeque<Arc<WatchRecord>>,
    compacted: u64,
    log_capacity: usize,
    uid_prefix: u32,
    uid_counter: u64,
    rng: u64,
    /// Whether writes to Deployments/StatefulSets/ReplicaSets are followed by a status update as if a workload
    /// controller had converged (`status.replicas = spec.replicas`, `observedGeneration`).
    pub simulate_workloads: bool,
    notify: broadcast::Sender<Arc<WatchRecord>>,
}

/// Now as an RFC 3339 timestamp with second precision, like `metadata.creationTimestamp`.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now with microseconds, like `MicroTime` fields (`eventTime`).
pub fn now_micro() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl Store {
    /// An empty store serving `registry`.
    pub fn new(registry: Registry) -> Self {
        let (notify, _) = broadcast::channel(16_384);
        let uid_prefix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
            .unwrap_or(0x5eed);
        Self {
            registry,
            objects: BTreeMap::new(),
            rv: 0,
            log: VecDeque::new(),
            compacted: 0,
            log_capacity: DEFAULT_LOG_CAPACITY,
            uid_prefix,
            uid_counter: 0,
            rng: u64::from(uid_prefix) | 1,
            simulate_workloads: false,
            notify,
        }
    }

    /// The current (latest) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch may start from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted
    }

    /// A fresh uid in UUID form.
    pub fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        let c = self.uid_counter;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.uid_prefix,
            (c >> 48) & 0xffff,
            (c >> 36) & 0xfff,
            (c >> 24) & 0xfff,
            c & 0xffff_ffff_ffff
        )
    }

    /// Five random characters for `generateName`, from the alphabet the real server uses.
    pub fn random_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| {
                // xorshift64: good enough to make generated names unique and unpredictable to a test.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                ALPHABET[(self.rng % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjKey) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Objects of one resource, in one namespace or all, in key order (namespace, then name).
    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<(&ObjKey, &Stored)> {
        let start = ObjKey::new(group, plural, namespace.unwrap_or(""), "");
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.group == group && k.plural == plural && namespace.is_none_or(|ns| k.namespace == ns))
            .collect()
    }

    /// Commits a create (`existed == false`) or an update: stamps a new resourceVersion and logs the event.
    pub fn write(&mut self, key: ObjKey, mut value: Value, owners: FieldOwners) -> Value {
        self.rv += 1;
        set_rv(&mut value, self.rv);
        let previous = self.objects.get(&key).map(|s| s.value.clone());
        let event = if previous.is_some() { EventType::Modified } else { EventType::Added };
        self.objects.insert(key.clone(), Stored { value: value.clone(), owners });
        self.record(key, event, value.clone(), previous);
        value
    }

    /// Deletes the object at `key`, returning its final state (stamped with the deletion's resourceVersion).
    pub fn remove(&mut self, key: &ObjKey) -> Option<Value> {
        let stored = self.objects.remove(key)?;
        self.rv += 1;
        let mut value = stored.value;
        set_rv(&mut value, self.rv);
        self.record(key.clone(), EventType::Deleted, value.clone(), None);
        Some(value)
    }

    fn record(&mut self, key: ObjKey, event: EventType, object: Value, previous: Option<Value>) {
        let rec = Arc::new(WatchRecord { rv: self.rv, key, event, object, previous });
        self.log.push_back(rec.clone());
        while self.log.len() > self.log_capacity {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.notify.send(rec);
    }

    /// Drops the whole event log: a watch from any resourceVersion older than the current one then gets
    /// 410 Gone, as after an etcd compaction.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    /// Records after `rv` for one resource, plus a receiver for what follows, taken atomically so that no
    /// event falls between replay and live updates. `None` when `rv` is older than the compaction point.
    pub fn replay_from(&self, rv: u64, group: &str, plural: &str) -> Option<Replay> {
        if rv < self.compacted {
            return None;
        }
        let records =
            self.log.iter().filter(|r| r.rv > rv && r.key.group == group && r.key.plural == plural).cloned().collect();
        Some((records, self.notify.subscribe()))
    }

    /// A receiver for changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchRecord>> {
        self.notify.subscribe()
    }
}

/// Sets `metadata.resourceVersion`.
pub fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_bump_one_global_counter_and_replay_respects_compaction() {
        let mut store = Store::new(Registry::default());
        let a = store.write(
            ObjKey::new("", "configmaps", "d", "a"),
            json!({"metadata": {"name": "a"}}),
            FieldOwners::default(),
        );
        let _b = store.write(
            ObjKey::new("apps", "deployments", "d", "b"),
            json!({"metadata": {"name": "b"}}),
            FieldOwners::default(),
        );
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(store.current_rv(), 2);
        let (records, _) = store.replay_from(0, "", "configmaps").expect("not compacted");
        assert_eq!(records.len(), 1);
        store.compact();
        assert!(store.replay_from(1, "", "configmaps").is_none());
        assert!(store.replay_from(2, "", "configmaps").is_some());
    }

    #[test]
    fn list_is_scoped_to_resource_and_namespace() {
        let mut store = Store::new(Registry::default());
        for (ns, name) in [("a", "x"), ("b", "y"), ("a", "z")] {
            store.write(ObjKey::new("", "pods", ns, name), json!({"metadata": {"name": name}}), FieldOwners::default());
        }
        store.write(ObjKey::new("", "podsx", "a", "w"), json!({"metadata": {}}), FieldOwners::default());
        let names: Vec<&str> = store.list("", "pods", Some("a")).iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, vec!["x", "z"]);
        assert_eq!(store.list("", "pods", None).len(), 3);
    }
}
