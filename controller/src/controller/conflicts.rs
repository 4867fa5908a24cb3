//! Two autoscalers on one target: another ScalingPolicy, a HorizontalPodAutoscaler (autoscaling/v2) or a KEDA
//! ScaledObject (keda.sh/v1alpha1) that scales the same workload.
//!
//! ```text
//!  watch ScalingPolicy (the reconcile loop's own watch) ─┐
//!  watch HorizontalPodAutoscaler (spec.scaleTargetRef)  ─┼─► Index: target ─► claims ─► resolve(me, others) ─► Verdict
//!  watch ScaledObject (spec.scaleTargetRef)             ─┘      (in memory, rebuilt     (pure: who acts, the
//!                                                                 from the watches)      Conflict condition)
//! ```
//!
//! Only the oldest writing ScalingPolicy of a target acts (creationTimestamp, then name); the others evaluate
//! and report but never patch `/scale`. A policy stands down for an HPA or a ScaledObject on its target unless
//! its `spec.onConflict` is `Act` (which never overrides another ScalingPolicy). A dry-run, paused or invalid
//! policy never writes, so it is in nobody's way and has no conflict of its own.
//!
//! The index holds a few strings per object, not the objects, so that 10,000 policies and HPAs cost little; it
//! is filled from the watches only, so every replica (with `--shards`, whichever shard it holds) decides the
//! same from the same data, and a restarted controller rebuilds it with its first LIST. A cluster without
//! KEDA answers 404 for ScaledObjects: that is "no ScaledObjects", retried with the watcher's backoff (KEDA may
//! be installed later); a controller without RBAC for a kind logs it once and treats it as none. Neither ever
//! blocks readiness or fails a policy.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{FutureExt, StreamExt, future::BoxFuture};
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{NamespaceResourceScope, ObjectMeta},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, de::DeserializeOwned};

use super::{act, report::Mode};
use crate::{
    api::{OnConflict, RawScalingPolicy, ScalingPolicy},
    engine::Policy,
};

/// How long a reconcile waits, after the controller starts, for the first LIST of every watch the verdict
/// reads, before it decides on what it has.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many other objects are named in a condition; the rest are counted.
const NAMED: usize = 5;

/// The kinds of object that may scale a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    HorizontalPodAutoscaler,
    ScaledObject,
    ScalingPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::ScaledObject => "ScaledObject",
            Kind::ScalingPolicy => "ScalingPolicy",
        }
    }

    /// The reason of the Conflict condition and Warning Event when this kind is in the way.
    fn reason(self) -> &'static str {
        match self {
            Kind::HorizontalPodAutoscaler => "ConflictingHorizontalPodAutoscaler",
            Kind::ScaledObject => "ConflictingScaledObject",
            Kind::ScalingPolicy => "ConflictingScalingPolicy",
        }
    }
}

/// A scaled workload: namespace, API group (not version), kind and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub namespace: String,
    pub group: String,
    pub kind: String,
    pub name: String,
}

/// The workload a reference names, whatever version or defaults it is written with: `apps/v1` and
/// `apps/v1beta2` are one group, a missing apiVersion is `apps` (the default of ScalingPolicy and KEDA), a
/// missing kind is `Deployment`, and the legacy `extensions` Deployments and ReplicaSets are the `apps` ones.
pub fn target_key(namespace: &str, api_version: Option<&str>, kind: Option<&str>, name: &str) -> Option<TargetKey> {
    if name.is_empty() {
        return None;
    }
    let kind = kind.filter(|k| !k.is_empty()).unwrap_or("Deployment");
    let group = match api_version.map(str::trim).filter(|v| !v.is_empty()) {
        None => "apps",
        Some(v) => v.rsplit_once('/').map_or("", |(group, _)| group),
    };
    let group = if group == "extensions" && matches!(kind, "Deployment" | "ReplicaSet") { "apps" } else { group };
    Some(TargetKey { namespace: namespace.into(), group: group.into(), kind: kind.into(), name: name.into() })
}

/// One object's claim on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub created: Option<Timestamp>,
    /// Whether it changes replicas: false for a dry-run, paused or invalid ScalingPolicy.
    pub writes: bool,
    /// A ScalingPolicy whose spec.onConflict is Act.
    pub overrides: bool,
    /// The ScaledObject that owns an HPA (KEDA scales through an HPA of its own, `keda-hpa-NAME`).
    pub managed_by: Option<String>,
}

/// What identifies a claim in the index.
pub type ClaimId = (Kind, String, String);

impl Claim {
    pub fn id(&self) -> ClaimId {
        (self.kind, self.namespace.clone(), self.name.clone())
    }

    /// Oldest first: by creationTimestamp (none sorts last), then by name.
    fn age(&self) -> (bool, Option<Timestamp>, &str) {
        (self.created.is_none(), self.created, self.name.as_str())
    }

    fn describe(&self) -> String {
        let mut s = format!("{} {}/{}", self.kind.as_str(), self.namespace, self.name);
        if let Some(owner) = &self.managed_by {
            s.push_str(&format!(" (managed by ScaledObject {owner})"));
        }
        s
    }
}

/// The target and claim of a policy that parsed; `valid` is whether it also converts for the engine (an
/// invalid policy never acts, so it blocks nobody).
pub fn policy_claim(sp: &ScalingPolicy, valid: bool) -> Option<(TargetKey, Claim)> {
    let namespace = sp.namespace()?;
    let target = &sp.spec.target_ref;
    let key = target_key(&namespace, Some(&target.api_version), Some(&target.kind), &target.name)?;
    let claim = Claim {
        kind: Kind::ScalingPolicy,
        namespace,
        name: sp.name_any(),
        created: sp.metadata.creation_timestamp.as_ref().map(|t| t.0),
        writes: valid && act::mode(sp) == Mode::Active,
        overrides: sp.spec.on_conflict == Some(OnConflict::Act),
        managed_by: None,
    };
    Some((key, claim))
}

/// What this evaluation may do about the other autoscalers of its target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Another autoscaler writes the target: the Conflict condition's reason and message.
    pub conflict: Option<(&'static str, String)>,
    /// This policy must not patch /scale.
    pub stand_down: bool,
    /// Why it stands down, short, for the last evaluation's reason: "ScalingPolicy shop/web-a acts".
    pub blocker: Option<String>,
}

/// Who acts on a target, from the policy's own claim and every other claim on the same target (pure).
pub fn resolve(me: &Claim, others: &[Claim]) -> Verdict {
    if !me.writes {
        return Verdict::default();
    }
    let mine = me.id();
    let mut writers: Vec<&Claim> = others.iter().filter(|c| c.writes && c.id() != mine).collect();
    // KEDA's own HPA is named through its ScaledObject when that is visible.
    let objects: HashSet<&str> =
        writers.iter().filter(|c| c.kind == Kind::ScaledObject).map(|c| c.name.as_str()).collect();
    writers.retain(|c| c.managed_by.as_deref().is_none_or(|owner| !objects.contains(owner)));
    if writers.is_empty() {
        return Verdict::default();
    }
    let mut external: Vec<&Claim> = writers.iter().copied().filter(|c| c.kind != Kind::ScalingPolicy).collect();
    external.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let mut policies: Vec<&Claim> = writers.iter().copied().filter(|c| c.kind == Kind::ScalingPolicy).collect();
    policies.sort_by(|a, b| a.age().cmp(&b.age()));
    let oldest = policies.first().copied().filter(|o| o.age() < me.age());
    // Only the oldest policy may act, and then only if nothing else scales the target or it overrides that.
    let acts = |p: &Claim| external.is_empty() || p.overrides;
    let held_by_external = !external.is_empty() && !me.overrides;
    let stand_down = oldest.is_some() || held_by_external;

    let mut named: Vec<String> = external.iter().map(|c| c.describe()).collect();
    for p in &policies {
        let (age, role) = match oldest {
            Some(o) if o.id() == p.id() => ("older", if acts(p) { "it acts" } else { "it stands down too" }),
            _ if p.age() < me.age() => ("older", "it stands down"),
            _ => ("newer", "it stands down"),
        };
        named.push(format!("{} ({age}; {role})", p.describe()));
    }
    let more = named.len().saturating_sub(NAMED);
    named.truncate(NAMED);
    let mut list = named.join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    let outcome = match (oldest, held_by_external) {
        (_, true) => "this policy evaluates but does not scale the target (set spec.onConflict: Act to scale anyway)",
        (Some(_), false) => "only the oldest ScalingPolicy of a target scales it: this policy evaluates but does not",
        (None, false) if !external.is_empty() => {
            "spec.onConflict is Act: this policy scales the target too, and the two will undo each other's changes"
        }
        (None, false) => "this policy is the oldest, so it scales the target; the others only evaluate",
    };
    let reason = external.first().map_or(Kind::ScalingPolicy, |c| c.kind).reason();
    let blocker = if held_by_external {
        external.first().map(|c| format!("{} scales the target", c.describe()))
    } else {
        oldest.map(|o| format!("{} acts", o.describe()))
    };
    Verdict { conflict: Some((reason, format!("also targeted by {list}: {outcome}"))), stand_down, blocker }
}

/// What the index learns from one watched object.
pub trait Claimant {
    /// The object's identity in the index, if it has a name and namespace.
    fn claim_id(&self) -> Option<ClaimId>;
    /// Its target and claim; `None` when it names no target (it is then forgotten).
    fn claim(&self) -> Option<(TargetKey, Claim)>;
}

impl Claimant for RawScalingPolicy {
    fn claim_id(&self) -> Option<ClaimId> {
        Some((Kind::ScalingPolicy, self.namespace()?, self.name_any()))
    }

    fn claim(&self) -> Option<(TargetKey, Claim)> {
        let sp = self.parse_spec().ok()?;
        let valid = Policy::try_from(&sp.spec).is_ok();
        policy_claim(&sp, valid)
    }
}

/// An HPA or a ScaledObject as far as conflicts go: its metadata and `spec.scaleTargetRef`, nothing else (the
/// rest of the object is skipped while reading).
#[derive(Clone, Debug, Deserialize)]
pub struct ScaleTargetOwner<K> {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ScaleTargetSpec,
    #[serde(skip)]
    kind: std::marker::PhantomData<K>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetSpec {
    #[serde(default)]
    pub scale_target_ref: Option<ScaleTargetRef>,
}

/// `spec.scaleTargetRef` of an HPA (apiVersion, kind, name) or a ScaledObject (apiVersion and kind optional,
/// default apps/v1 Deployment).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: String,
}

/// Where a [`ScaleTargetOwner`] is served.
pub trait OwnerKind: Clone + Debug + Send + Sync + 'static {
    const KIND: Kind;
    const GROUP: &'static str;
    const VERSION: &'static str;
    const PLURAL: &'static str;
}

/// `autoscaling/v2` HorizontalPodAutoscalers.
#[derive(Clone, Debug)]
pub struct Hpa;
impl OwnerKind for Hpa {
    const KIND: Kind = Kind::HorizontalPodAutoscaler;
    const GROUP: &'static str = "autoscaling";
    const VERSION: &'static str = "v2";
    const PLURAL: &'static str = "horizontalpodautoscalers";
}

/// KEDA's `keda.sh/v1alpha1` ScaledObjects.
#[derive(Clone, Debug)]
pub struct Keda;
impl OwnerKind for Keda {
    const KIND: Kind = Kind::ScaledObject;
    const GROUP: &'static str = "keda.sh";
    const VERSION: &'static str = "v1alpha1";
    const PLURAL: &'static str = "scaledobjects";
}

impl<K: OwnerKind> Resource for ScaleTargetOwner<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::KIND.as_str().into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K: OwnerKind> Claimant for ScaleTargetOwner<K> {
    fn claim_id(&self) -> Option<ClaimId> {
        Some((K::KIND, self.namespace()?, self.name_any()))
    }

    fn claim(&self) -> Option<(TargetKey, Claim)> {
        let namespace = self.namespace()?;
        let r = self.spec.scale_target_ref.as_ref()?;
        let key = target_key(&namespace, r.api_version.as_deref(), r.kind.as_deref(), &r.name)?;
        let managed_by = self
            .owner_references()
            .iter()
            .find(|o| o.kind == "ScaledObject" && o.api_version.starts_with("keda.sh/"))
            .map(|o| o.name.clone());
        let claim = Claim {
            kind: K::KIND,
            namespace,
            name: self.name_any(),
            created: self.metadata.creation_timestamp.as_ref().map(|t| t.0),
            writes: true,
            overrides: false,
            managed_by,
        };
        Some((key, claim))
    }
}

/// One watch feeding the index. Settled once its first LIST is done or it failed.
pub struct Source {
    id: usize,
    settled: bool,
}

struct Entry {
    source: usize,
    target: TargetKey,
    claim: Claim,
}

#[derive(Default)]
struct Index {
    claims: HashMap<ClaimId, Entry>,
    by_target: HashMap<TargetKey, Vec<ClaimId>>,
    /// The objects seen by each watch's LIST in progress; the others of that watch are gone at its end.
    relisting: HashMap<usize, HashSet<ClaimId>>,
}

impl Index {
    fn put(&mut self, source: usize, id: ClaimId, value: Option<(TargetKey, Claim)>) {
        self.remove(&id);
        if let Some(seen) = self.relisting.get_mut(&source) {
            seen.insert(id.clone());
        }
        if let Some((target, claim)) = value {
            self.by_target.entry(target.clone()).or_default().push(id.clone());
            self.claims.insert(id, Entry { source, target, claim });
        }
    }

    fn remove(&mut self, id: &ClaimId) {
        let Some(entry) = self.claims.remove(id) else {
            return;
        };
        if let Some(ids) = self.by_target.get_mut(&entry.target) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_target.remove(&entry.target);
            }
        }
    }

    /// Forgets what `source` reported that `keep` does not hold.
    fn retain_source(&mut self, source: usize, keep: &HashSet<ClaimId>) {
        let stale: Vec<ClaimId> = self
            .claims
            .iter()
            .filter(|(id, e)| e.source == source && !keep.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.remove(id);
        }
    }

    fn on(&self, target: &TargetKey) -> Vec<Claim> {
        let ids = self.by_target.get(target).map(Vec::as_slice).unwrap_or_default();
        ids.iter().filter_map(|id| self.claims.get(id)).map(|e| e.claim.clone()).collect()
    }
}

/// Why a watch of HPAs or ScaledObjects does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Problem {
    /// 404: the kind is not served (KEDA not installed).
    Absent,
    /// 403: the controller may not list it.
    Forbidden,
    Failing,
}

impl Problem {
    fn of(error: &watcher::Error) -> Self {
        let code = match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => match e {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            watcher::Error::WatchError(status) => Some(status.code),
            watcher::Error::NoResourceVersion => None,
        };
        match code {
            Some(404) => Problem::Absent,
            Some(403) => Problem::Forbidden,
            _ => Problem::Failing,
        }
    }
}

/// Every claim on every target, as the watches report them, shared by all reconciles.
pub struct Conflicts {
    index: Mutex<Index>,
    /// Watches that have not answered their first LIST yet.
    unsettled: tokio::sync::watch::Sender<usize>,
    sources: AtomicUsize,
    /// (kind, problem) already logged, so that a cluster without KEDA says so once.
    logged: Mutex<HashSet<(Kind, Problem)>>,
}

impl Default for Conflicts {
    fn default() -> Self {
        Conflicts {
            index: Mutex::default(),
            unsettled: tokio::sync::watch::Sender::new(0),
            sources: AtomicUsize::new(0),
            logged: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Conflicts {
    /// A new watch whose first LIST verdicts wait for (up to [`SETTLE_TIMEOUT`]).
    pub fn register(&self) -> Source {
        self.unsettled.send_modify(|n| *n += 1);
        Source { id: self.sources.fetch_add(1, Ordering::Relaxed), settled: false }
    }

    fn settle(&self, source: &mut Source) {
        if !source.settled {
            source.settled = true;
            self.unsettled.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Waits until every registered watch has listed once (or failed), at most `timeout`. Immediate afterwards.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let mut rx = self.unsettled.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
    }

    /// Applies one watch event to the index.
    pub fn observe<K: Claimant>(&self, source: &mut Source, event: &watcher::Event<K>) {
        let mut index = lock(&self.index);
        match event {
            watcher::Event::Init => {
                index.relisting.insert(source.id, HashSet::new());
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                if let Some(id) = o.claim_id() {
                    index.put(source.id, id, o.claim());
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(id) = o.claim_id() {
                    index.remove(&id);
                }
            }
            watcher::Event::InitDone => {
                let seen = index.relisting.remove(&source.id).unwrap_or_default();
                index.retain_source(source.id, &seen);
                drop(index);
                self.settle(source);
            }
        }
    }

    /// Applies a watch result: an error settles the source (a kind that cannot be read is "none"; a 404 also
    /// forgets what it held, since the kind is gone) and is logged once.
    pub fn observe_result<K: Claimant>(
        &self,
        kind: Kind,
        source: &mut Source,
        item: &Result<watcher::Event<K>, watcher::Error>,
    ) {
        match item {
            Ok(event) => self.observe(source, event),
            Err(error) => {
                let problem = Problem::of(error);
                if problem == Problem::Absent {
                    let mut index = lock(&self.index);
                    index.relisting.remove(&source.id);
                    index.retain_source(source.id, &HashSet::new());
                }
                if problem == Problem::Failing || lock(&self.logged).insert((kind, problem)) {
                    let kind = kind.as_str();
                    match problem {
                        Problem::Absent => tracing::info!(
                            kind,
                            "not served by this cluster: treating as none and checking again with backoff"
                        ),
                        Problem::Forbidden => tracing::warn!(
                            kind,
                            %error,
                            "no permission to list or watch: conflicts with this kind are not detected"
                        ),
                        Problem::Failing => tracing::debug!(kind, %error, "watch failed; retrying with backoff"),
                    }
                }
                self.settle(source);
            }
        }
    }

    /// The claims on `target` other than `me`'s, and what `me` may do about them.
    pub fn verdict(&self, target: &TargetKey, me: &Claim) -> Verdict {
        let others = lock(&self.index).on(target);
        resolve(me, &others)
    }

    /// The verdict for a policy that converted for the engine.
    pub fn verdict_for(&self, sp: &ScalingPolicy) -> Verdict {
        match policy_claim(sp, true) {
            Some((target, me)) => self.verdict(&target, &me),
            None => Verdict::default(),
        }
    }
}

/// Watches HPAs and ScaledObjects into `conflicts` (one watch per namespace of `namespaces`, or one for all),
/// until dropped. The watches are registered now, so that verdicts wait for their first LIST.
pub fn watch_autoscalers(client: &Client, namespaces: &[String], conflicts: Arc<Conflicts>) -> BoxFuture<'static, ()> {
    let mut watches = Vec::new();
    let scopes: Vec<Option<&str>> =
        if namespaces.is_empty() { vec![None] } else { namespaces.iter().map(|n| Some(n.as_str())).collect() };
    for ns in scopes {
        watches.push(follow::<Hpa>(api(client, ns), conflicts.clone(), conflicts.register()));
        watches.push(follow::<Keda>(api(client, ns), conflicts.clone(), conflicts.register()));
    }
    futures::future::join_all(watches).map(|_| ()).boxed()
}

fn api<K: OwnerKind>(client: &Client, namespace: Option<&str>) -> Api<ScaleTargetOwner<K>> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn follow<K: OwnerKind>(
    api: Api<ScaleTargetOwner<K>>,
    conflicts: Arc<Conflicts>,
    mut source: Source,
) -> BoxFuture<'static, ()>
where
    ScaleTargetOwner<K>: DeserializeOwned,
{
    async move {
        let mut stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            conflicts.observe_result(K::KIND, &mut source, &item);
        }
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(1_700_000_000 + s).expect("valid"))
    }

    fn policy(name: &str, created: i64) -> Claim {
        Claim {
            kind: Kind::ScalingPolicy,
            namespace: "team".into(),
            name: name.into(),
            created: at(created),
            writes: true,
            overrides: false,
            managed_by: None,
        }
    }

    fn hpa(name: &str) -> Claim {
        Claim { kind: Kind::HorizontalPodAutoscaler, ..policy(name, 0) }
    }

    fn scaled_object(name: &str) -> Claim {
        Claim { kind: Kind::ScaledObject, ..policy(name, 0) }
    }

    #[test]
    fn references_match_whatever_version_or_defaults_they_are_written_with() {
        let web = target_key("team", Some("apps/v1"), Some("Deployment"), "web");
        for same in [
            target_key("team", None, None, "web"),
            target_key("team", Some(""), Some("Deployment"), "web"),
            target_key("team", Some("apps/v1beta2"), Some("Deployment"), "web"),
            target_key("team", Some("extensions/v1beta1"), Some("Deployment"), "web"),
            target_key("team", None, Some(""), "web"),
        ] {
            assert_eq!(same, web);
        }
        for other in [
            target_key("other", Some("apps/v1"), Some("Deployment"), "web"),
            target_key("team", Some("apps/v1"), Some("StatefulSet"), "web"),
            target_key("team", Some("argoproj.io/v1alpha1"), Some("Rollout"), "web"),
            target_key("team", Some("apps/v1"), Some("Deployment"), "api"),
        ] {
            assert_ne!(other, web);
        }
        assert_eq!(
            target_key("team", Some("v1"), Some("ReplicationController"), "rc").map(|k| k.group),
            Some("".into())
        );
        assert_eq!(target_key("team", None, None, ""), None, "no name, no target");
    }

    #[test]
    fn alone_on_its_target_a_policy_has_no_conflict() {
        assert_eq!(resolve(&policy("web", 0), &[]), Verdict::default());
        // Its own entry in the index is not a conflict.
        assert_eq!(resolve(&policy("web", 0), &[policy("web", 0)]), Verdict::default());
    }

    #[test]
    fn the_oldest_policy_acts_and_the_newer_one_stands_down() {
        let (a, b) = (policy("web-a", 10), policy("web-b", 20));
        let older = resolve(&a, std::slice::from_ref(&b));
        assert!(!older.stand_down);
        assert_eq!(
            older.conflict,
            Some((
                "ConflictingScalingPolicy",
                "also targeted by ScalingPolicy team/web-b (newer; it stands down): this policy is the oldest, so it scales the target; the others only evaluate".into()
            ))
        );
        let newer = resolve(&b, &[a]);
        assert!(newer.stand_down);
        assert_eq!(
            newer.conflict,
            Some((
                "ConflictingScalingPolicy",
                "also targeted by ScalingPolicy team/web-a (older; it acts): only the oldest ScalingPolicy of a target scales it: this policy evaluates but does not".into()
            ))
        );
        assert_eq!(newer.blocker.as_deref(), Some("ScalingPolicy team/web-a acts"));
    }

    #[test]
    fn same_creation_time_is_decided_by_name_and_no_time_is_newest() {
        let (a, b) = (policy("a", 5), policy("b", 5));
        assert!(!resolve(&a, std::slice::from_ref(&b)).stand_down);
        assert!(resolve(&b, std::slice::from_ref(&a)).stand_down);
        let timeless = Claim { created: None, ..policy("0-first-by-name", 0) };
        assert!(resolve(&timeless, std::slice::from_ref(&b)).stand_down);
        assert!(!resolve(&b, &[timeless]).stand_down);
    }

    #[test]
    fn policies_that_never_write_are_in_nobodys_way() {
        let dry = Claim { writes: false, ..policy("old-dry-run", 0) };
        assert_eq!(resolve(&policy("new", 100), std::slice::from_ref(&dry)), Verdict::default());
        assert_eq!(resolve(&dry, &[policy("new", 100)]), Verdict::default(), "a dry run has no conflict either");
    }

    #[test]
    fn an_hpa_or_scaled_object_makes_a_policy_stand_down_unless_it_overrides() {
        let me = policy("web", 0);
        let held = resolve(&me, &[hpa("web")]);
        assert!(held.stand_down);
        let (reason, message) = held.conflict.clone().expect("conflict");
        assert_eq!(reason, "ConflictingHorizontalPodAutoscaler");
        assert!(message.starts_with("also targeted by HorizontalPodAutoscaler team/web: "), "{message}");
        assert!(message.contains("spec.onConflict: Act"), "{message}");
        assert_eq!(resolve(&me, &[scaled_object("web")]).conflict.map(|c| c.0), Some("ConflictingScaledObject"));

        let bold = Claim { overrides: true, ..me };
        let acting = resolve(&bold, &[hpa("web")]);
        assert!(!acting.stand_down);
        assert_eq!(acting.conflict.map(|c| c.0), Some("ConflictingHorizontalPodAutoscaler"), "still reported");
    }

    #[test]
    fn the_override_never_overrides_an_older_policy() {
        let bold = Claim { overrides: true, ..policy("new", 100) };
        let verdict = resolve(&bold, &[policy("old", 0), hpa("web")]);
        assert!(verdict.stand_down);
        let old_with_override = Claim { overrides: true, ..policy("old", 0) };
        let message = resolve(&policy("new", 100), &[old_with_override, hpa("web")]).conflict.expect("conflict").1;
        assert!(message.contains("ScalingPolicy team/old (older; it acts)"), "{message}");
        let message = resolve(&policy("new", 100), &[policy("old", 0), hpa("web")]).conflict.expect("conflict").1;
        assert!(message.contains("ScalingPolicy team/old (older; it stands down too)"), "{message}");
    }

    #[test]
    fn kedas_own_hpa_is_named_through_its_scaled_object() {
        let keda_hpa = Claim { managed_by: Some("web".into()), ..hpa("keda-hpa-web") };
        let verdict = resolve(&policy("web", 0), &[scaled_object("web"), keda_hpa.clone()]);
        let (reason, message) = verdict.conflict.expect("conflict");
        assert_eq!(reason, "ConflictingScaledObject");
        assert!(message.starts_with("also targeted by ScaledObject team/web: "), "{message}");
        // Without the ScaledObject in view (no RBAC for it), the HPA says who manages it.
        let message = resolve(&policy("web", 0), &[keda_hpa]).conflict.expect("conflict").1;
        assert!(
            message.contains("HorizontalPodAutoscaler team/keda-hpa-web (managed by ScaledObject web)"),
            "{message}"
        );
    }

    #[test]
    fn many_policies_are_counted_after_the_first_few() {
        let others: Vec<Claim> = (1..14).map(|i| policy(&format!("p{i:02}"), i)).collect();
        let verdict = resolve(&policy("p00", 0), &others);
        let message = verdict.conflict.expect("conflict").1;
        assert!(message.contains("p05 (newer; it stands down) and 8 more: "), "{message}");
        assert!(!verdict.stand_down);
    }

    #[test]
    fn the_index_follows_watch_events_and_relists() {
        let conflicts = Conflicts::default();
        let mut source = conflicts.register();
        let target = target_key("team", None, None, "web").expect("target");
        let object = |name: &str, target: &str| ScaleTargetOwner::<Hpa> {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("team".into()), ..Default::default() },
            spec: ScaleTargetSpec {
                scale_target_ref: Some(ScaleTargetRef {
                    api_version: Some("apps/v1".into()),
                    kind: Some("Deployment".into()),
                    name: target.into(),
                }),
            },
            kind: Default::default(),
        };
        let me = policy("web", 0);
        conflicts.observe(&mut source, &watcher::Event::<ScaleTargetOwner<Hpa>>::Init);
        conflicts.observe(&mut source, &watcher::Event::InitApply(object("a", "web")));
        conflicts.observe(&mut source, &watcher::Event::InitApply(object("b", "web")));
        conflicts.observe(&mut source, &watcher::Event::<ScaleTargetOwner<Hpa>>::InitDone);
        let named = |v: Verdict| v.conflict.map(|c| c.1).unwrap_or_default();
        assert!(
            named(conflicts.verdict(&target, &me))
                .contains("HorizontalPodAutoscaler team/a, HorizontalPodAutoscaler team/b")
        );
        // Retargeted elsewhere, then deleted.
        conflicts.observe(&mut source, &watcher::Event::Apply(object("a", "api")));
        conflicts.observe(&mut source, &watcher::Event::Delete(object("b", "web")));
        assert_eq!(conflicts.verdict(&target, &me), Verdict::default());
        // A relist that no longer holds "a" forgets it.
        let api = target_key("team", None, None, "api").expect("target");
        assert!(conflicts.verdict(&api, &me).stand_down);
        conflicts.observe(&mut source, &watcher::Event::<ScaleTargetOwner<Hpa>>::Init);
        conflicts.observe(&mut source, &watcher::Event::<ScaleTargetOwner<Hpa>>::InitDone);
        assert_eq!(conflicts.verdict(&api, &me), Verdict::default());
    }

    #[test]
    fn a_kind_that_goes_away_is_forgotten_and_one_that_is_forbidden_is_kept() {
        let conflicts = Conflicts::default();
        let target = target_key("team", None, None, "web").expect("target");
        let object: ScaleTargetOwner<Keda> = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web", "namespace": "team" },
            "spec": { "scaleTargetRef": { "name": "web" } }
        }))
        .expect("scaled object");
        let failed = |code: u16| -> Result<watcher::Event<ScaleTargetOwner<Keda>>, watcher::Error> {
            let status = kube::core::Status::failure("no", "Whatever").with_code(code);
            Err(watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status))))
        };
        let mut source = conflicts.register();
        conflicts.observe(&mut source, &watcher::Event::Apply(object));
        let me = policy("web", 0);
        assert!(conflicts.verdict(&target, &me).stand_down);
        // RBAC revoked: what was seen stays (the objects still scale the target).
        conflicts.observe_result(Kind::ScaledObject, &mut source, &failed(403));
        assert!(conflicts.verdict(&target, &me).stand_down);
        // The CRD was deleted (KEDA uninstalled): no ScaledObjects any more.
        conflicts.observe_result(Kind::ScaledObject, &mut source, &failed(404));
        assert_eq!(conflicts.verdict(&target, &me), Verdict::default());
    }

    #[tokio::test]
    async fn verdicts_wait_for_the_first_list_of_every_watch_only() {
        let conflicts = Conflicts::default();
        assert!(conflicts.settled(Duration::ZERO).await, "nothing to wait for");
        let mut source = conflicts.register();
        assert!(!conflicts.settled(Duration::from_millis(10)).await);
        let absent = kube::Error::Api(Box::new(kube::core::Status::failure("not found", "NotFound").with_code(404)));
        conflicts.observe_result::<ScaleTargetOwner<Keda>>(
            Kind::ScaledObject,
            &mut source,
            &Err(watcher::Error::InitialListFailed(absent)),
        );
        assert!(conflicts.settled(Duration::ZERO).await, "an absent kind is none, not a wait");
    }
}
