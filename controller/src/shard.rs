//! Sharding policies across replicas: one `coordination.k8s.io/v1` Lease per shard, driven directly through the
//! Lease API with resourceVersion-based optimistic concurrency.
//!
//! ```text
//!  policy namespace/name ──FNV-1a──► shard = hash % S          (stable across builds and replicas)
//!  replica ──each tick──► list Leases ─► renew held shards ─► count live members ─► release extras / acquire free
//!                          <lease>-member-<id>: "I am alive"      <lease>-shard-<i>: "I evaluate shard i"
//! ```
//!
//! Each replica keeps a member Lease of its own, so that a replica holding no shard yet is counted. With N live
//! members sorted by identity, member k's quota is `S / N`, plus one for the first `S % N`. A replica above its
//! quota releases its extras (highest shard first); one below acquires free or expired shards. Adding a replica
//! therefore moves only its own share; a replica that dies stops renewing and its shards expire, then go to the
//! survivors at their next tick.
//!
//! The Lease is the fence. A shard counts as held only while the last successful renewal is younger than the
//! renew deadline (`duration - grace`), measured on the local monotonic clock from the moment the renewal was
//! *sent*. Every write the controller makes checks this first ([`Ownership::owns`]), so a replica that cannot
//! renew stops patching `grace` seconds before another replica can take the shard over.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use tokio::task::JoinHandle;

/// The shard count that means "no sharding": one leader through `foresight::leader`.
pub const SINGLE_SHARD: u32 = 1;
/// The largest supported shard count (one Lease each, all listed every tick).
pub const MAX_SHARDS: u32 = 1024;

/// The shard of a policy: FNV-1a (64 bit) of `namespace/name`, modulo `shards`. Unlike std's `DefaultHasher`,
/// FNV-1a is fixed by its definition, so every replica and every build agrees.
pub fn shard_of(namespace: &str, name: &str, shards: u32) -> u32 {
    let key = [namespace.as_bytes(), b"/", name.as_bytes()].concat();
    (fnv1a(&key) % u64::from(shards.max(1))) as u32
}

/// The 64-bit FNV-1a hash.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// Which shards this replica holds, and since when. Shared between the shard manager (writer) and every
/// reconcile (reader).
#[derive(Debug)]
pub struct Ownership {
    shards: u32,
    renew_deadline: Duration,
    /// Per shard: when the last successful acquire or renewal was sent, while held.
    renewed: Mutex<Vec<Option<Instant>>>,
    gains: AtomicU64,
}

impl Ownership {
    /// An ownership of `shards` shards, none held, each valid `renew_deadline` after its last renewal.
    pub fn new(shards: u32, renew_deadline: Duration) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS);
        Ownership { shards, renew_deadline, renewed: Mutex::new(vec![None; shards as usize]), gains: AtomicU64::new(0) }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Whether this replica may write for the policy `namespace/name` now: it holds the policy's shard and
    /// renewed it less than the renew deadline ago.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        self.holds(shard_of(namespace, name, self.shards))
    }

    /// Whether shard `shard` is held and its last renewal is within the renew deadline.
    pub fn holds(&self, shard: u32) -> bool {
        let renewed = lock(&self.renewed);
        renewed.get(shard as usize).copied().flatten().is_some_and(|at| at.elapsed() < self.renew_deadline)
    }

    /// The shards held now (within the renew deadline).
    pub fn held(&self) -> Vec<u32> {
        (0..self.shards).filter(|&s| self.holds(s)).collect()
    }

    /// How many times a shard was gained; the reconcile loop evaluates every policy when it changes.
    pub fn gains(&self) -> u64 {
        self.gains.load(Ordering::SeqCst)
    }

    fn renewed(&self, shard: u32, sent: Instant, gained: bool) {
        if let Some(slot) = lock(&self.renewed).get_mut(shard as usize) {
            *slot = Some(sent);
        }
        if gained {
            self.gains.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drop_shard(&self, shard: u32) {
        if let Some(slot) = lock(&self.renewed).get_mut(shard as usize) {
            *slot = None;
        }
    }

    fn drop_all(&self) {
        lock(&self.renewed).iter_mut().for_each(|slot| *slot = None);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the shard manager reports, so this module needs no metrics crate.
pub trait ShardObserver: Send + Sync {
    /// Shard `shard` is now held (`true`) or not (`false`) by this replica.
    fn shard_held(&self, shard: u32, held: bool);
}

/// Where the shard Leases live, as whom to hold them, and their timing.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub namespace: String,
    /// The Lease name prefix: shard i is `<prefix>-shard-<i>`, a member is `<prefix>-member-<identity>`.
    pub prefix: String,
    pub identity: String,
    pub shards: u32,
    /// How long a Lease is valid without renewal (whole seconds, as the Lease stores it).
    pub duration_seconds: u64,
    /// How long before expiry the holder stops writing; also the period of the manager's tick.
    pub grace_seconds: u64,
}

impl ShardConfig {
    /// How long after a renewal this replica still writes: `duration - grace`, so it stops `grace` before any
    /// other replica may take the shard.
    pub fn renew_deadline(&self) -> Duration {
        Duration::from_secs(self.duration_seconds.saturating_sub(self.grace_seconds).max(1))
    }

    /// The manager's period: half the shorter of the grace and the renew deadline, so a held shard is
    /// renewed at least twice before it stops counting.
    fn tick(&self) -> Duration {
        (Duration::from_secs(self.grace_seconds.max(1)).min(self.renew_deadline()) / 2).max(Duration::from_millis(100))
    }

    fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.prefix)
    }

    fn member_prefix(&self) -> String {
        format!("{}-member-", self.prefix)
    }

    fn member_lease(&self) -> String {
        let id: String = self
            .identity
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
            .collect();
        let mut name = format!("{}{}", self.member_prefix(), id.trim_matches(|c| c == '-' || c == '.'));
        name.truncate(253);
        name
    }
}

/// A running shard manager. [`Sharding::stop`] releases every shard; [`Sharding::abandon`] leaves them to expire.
pub struct Sharding {
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sharding {
    /// Stops without releasing anything, as a crashed replica would: its shards go to others when they expire.
    pub fn abandon(self) {
        self.task.abort();
    }

    /// Stops writing at once, then releases every held shard and this replica's member Lease.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the shard manager: every tick (see [`ShardConfig::tick`]) it renews, releases and acquires shard Leases, keeping
/// `ownership` (and `observer`) up to date.
pub fn start(
    client: Client,
    config: ShardConfig,
    ownership: Arc<Ownership>,
    observer: Arc<dyn ShardObserver>,
) -> Sharding {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let manager = Manager { api: Api::namespaced(client, &config.namespace), config, ownership, observer };
        tracing::info!(
            namespace = %manager.config.namespace,
            prefix = %manager.config.prefix,
            identity = %manager.config.identity,
            shards = manager.config.shards,
            "sharding policies across replicas"
        );
        (0..manager.config.shards).for_each(|shard| manager.observer.shard_held(shard, false));
        let mut tick = tokio::time::interval(manager.config.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    if let Err(error) = manager.step().await {
                        tracing::warn!(%error, "cannot list the shard Leases");
                    }
                }
            }
        }
        manager.release_all().await;
    });
    Sharding { stop, task }
}

struct Manager {
    api: Api<Lease>,
    config: ShardConfig,
    ownership: Arc<Ownership>,
    observer: Arc<dyn ShardObserver>,
}

/// A Lease's holder, if it holds it now (`renewTime + leaseDurationSeconds` in the future).
fn live_holder(lease: &Lease, now: Timestamp) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    let expires = renewed.checked_add(jiff::SignedDuration::from_secs(duration)).ok()?;
    (expires > now).then_some(holder)
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// The quota of `identity` among `members` (sorted): `shards / N`, plus one for the first `shards % N`.
pub fn quota(shards: u32, members: &BTreeSet<String>, identity: &str) -> u32 {
    let n = members.len().max(1) as u32;
    let rank = members.iter().position(|m| m == identity).unwrap_or(members.len()) as u32;
    shards / n + u32::from(rank < shards % n)
}

impl Manager {
    async fn step(&self) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let leases = self.api.list(&ListParams::default()).await?.items;
        let by_name = |name: &str| leases.iter().find(|l| l.metadata.name.as_deref() == Some(name));

        // Membership first: this replica counts even before it holds a shard.
        let member = self.config.member_lease();
        self.hold(by_name(&member), &member, now).await;
        let member_prefix = self.config.member_prefix();
        let mut members = BTreeSet::from([self.config.identity.clone()]);
        for lease in &leases {
            let name = lease.metadata.name.as_deref().unwrap_or_default();
            if !name.starts_with(&member_prefix) || name == member {
                continue;
            }
            match live_holder(lease, now) {
                Some(holder) => {
                    members.insert(holder.to_string());
                }
                None => self.forget_member(lease, now).await,
            }
        }
        let quota = quota(self.config.shards, &members, &self.config.identity);

        // Renew what this replica holds; a renewal that loses the race drops the shard at once.
        let mut mine = Vec::new();
        let mut free = Vec::new();
        for shard in 0..self.config.shards {
            let name = self.config.shard_lease(shard);
            let lease = by_name(&name);
            let ours = lease.and_then(holder) == Some(self.config.identity.as_str());
            if ours && self.ownership.holds(shard) {
                let sent = Instant::now();
                if self.hold(lease, &name, now).await {
                    self.ownership.renewed(shard, sent, false);
                    mine.push(shard);
                } else {
                    self.lost(shard);
                }
            } else {
                if self.ownership.holds(shard) || ours {
                    // Taken over, or our own stale hold from before a restart: claim it afresh below.
                    self.lost(shard);
                }
                if ours || lease.and_then(|l| live_holder(l, now)).is_none() {
                    free.push((shard, name));
                }
            }
        }

        // Above quota: release the extras, highest shard first, after fencing them locally.
        while mine.len() > quota as usize {
            let Some(shard) = mine.pop() else { break };
            self.lost(shard);
            let name = self.config.shard_lease(shard);
            self.release(&name).await;
            tracing::info!(shard, quota, members = members.len(), "released a shard to another replica");
        }

        // Below quota: acquire free or expired shards, starting at a point of our own so that replicas that
        // acquire at the same moment mostly try different Leases.
        if mine.len() < quota as usize && !free.is_empty() {
            let start = shard_of("", &self.config.identity, free.len() as u32) as usize;
            free.rotate_left(start);
            for (shard, name) in free {
                if mine.len() >= quota as usize {
                    break;
                }
                let sent = Instant::now();
                if self.hold(by_name(&name), &name, now).await {
                    self.ownership.renewed(shard, sent, true);
                    self.observer.shard_held(shard, true);
                    mine.push(shard);
                    tracing::info!(shard, quota, members = members.len(), "acquired a shard");
                }
            }
        }
        Ok(())
    }

    fn lost(&self, shard: u32) {
        if self.ownership.holds(shard) {
            tracing::info!(shard, "lost a shard");
        }
        self.ownership.drop_shard(shard);
        self.observer.shard_held(shard, false);
    }

    /// Creates, renews or takes over the Lease `name` for this replica; `false` if another write won.
    async fn hold(&self, current: Option<&Lease>, name: &str, now: Timestamp) -> bool {
        let duration = i32::try_from(self.config.duration_seconds).unwrap_or(i32::MAX);
        let identity = Some(self.config.identity.clone());
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: identity,
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(current) => {
                let mut lease = current.clone();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity != identity {
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
                    spec.holder_identity = identity;
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(now));
                // metadata.resourceVersion is kept: the replace fails with 409 if anyone wrote in between.
                self.api.replace(name, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(error) => {
                tracing::warn!(%error, lease = name, "cannot write a shard Lease");
                false
            }
        }
    }

    /// Hands a Lease back (no holder), if this replica still holds it.
    async fn release(&self, name: &str) {
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else { return };
        if holder(&lease) != Some(self.config.identity.as_str()) {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        if let Err(error) = self.api.replace(name, &PostParams::default(), &lease).await {
            tracing::warn!(%error, lease = name, "cannot release a shard Lease; it will expire");
        }
    }

    /// Deletes the member Lease of a replica gone for more than four lease durations (pods come and go under
    /// new names; their member Leases must not pile up).
    async fn forget_member(&self, lease: &Lease, now: Timestamp) {
        let renewed = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        let limit = jiff::SignedDuration::from_secs(4 * self.config.duration_seconds as i64);
        if renewed.is_some_and(|r| now.duration_since(r) < limit) {
            return;
        }
        let Some(name) = lease.metadata.name.as_deref() else { return };
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let _ = self.api.delete(name, &params).await;
    }

    async fn release_all(&self) {
        let held: Vec<u32> = (0..self.config.shards).collect();
        self.ownership.drop_all();
        for shard in held {
            self.observer.shard_held(shard, false);
            self.release(&self.config.shard_lease(shard)).await;
        }
        self.release(&self.config.member_lease()).await;
        tracing::info!("released every shard");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_of_a_policy_is_fnv1a_of_namespace_slash_name() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(u64::from(shard_of("a", "b", u32::MAX)), 0xe620_c319_0468_cf61 % u64::from(u32::MAX));
        assert_eq!(shard_of("shop", "checkout", 1), 0);
        assert!(shard_of("shop", "checkout", 16) < 16);
    }

    #[test]
    fn policies_spread_evenly_over_shards() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[shard_of(&format!("ns-{}", i % 40), &format!("policy-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn quotas_add_up_to_the_shard_count() {
        let members: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        let quotas: Vec<u32> = ["a", "b", "c"].iter().map(|m| quota(32, &members, m)).collect();
        assert_eq!(quotas, [11, 11, 10]);
        assert_eq!(quota(32, &BTreeSet::from(["a".to_string()]), "a"), 32);
    }

    #[test]
    fn a_shard_is_held_only_within_the_renew_deadline() {
        let ownership = Ownership::new(4, Duration::from_millis(50));
        assert!(!ownership.holds(2));
        ownership.renewed(2, Instant::now(), true);
        assert!(ownership.holds(2));
        assert_eq!(ownership.held(), [2]);
        assert_eq!(ownership.gains(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!ownership.holds(2), "a renewal older than the deadline no longer counts");
    }

    #[test]
    fn member_lease_names_are_valid_object_names() {
        let config = ShardConfig {
            namespace: "ops".into(),
            prefix: "foresight".into(),
            identity: "Foresight_7d9f/0".into(),
            shards: 16,
            duration_seconds: 15,
            grace_seconds: 5,
        };
        assert_eq!(config.member_lease(), "foresight-member-foresight-7d9f-0");
        assert_eq!(config.renew_deadline(), Duration::from_secs(10));
    }
}
