//! The reconcile loop's scheduler: when each policy is due, and at most one evaluation of a policy at a time.
//!
//! ```text
//!  watch (changed generation) ─┐                    ┌─► due: spawn evaluate(latest object from the store)
//!  ownership gained (all)     ─┼─► Schedule ─timer─┤      │ waits for its slot (slots.rs), evaluates
//!  finished: requeue after d ──┘  (key ─► due at,   └─◄───┘ reports (key, requeue after) on a channel
//!                                  or running)
//! ```
//!
//! kube-runtime's `Controller` keeps every dispatched reconcile in a map that it polls in full at each wake-up
//! (a completion, a watch event, a timer): with every due policy waiting there for an evaluation slot, each
//! wake-up cost O(policies waiting), and at 10,000 policies that polling was most of the controller's CPU. Here
//! each evaluation is its own task, which only runs when it is woken (its slot is free, its query answered), and
//! reports its end on a channel, so the loop's work per event does not grow with the number of policies.
//!
//! Semantics as kube-runtime's: nothing is dispatched before the store has listed once; a trigger while the
//! policy is being evaluated runs it again right after; an earlier due time wins over a later one; an object no
//! longer in the store is dropped; on shutdown nothing new starts and the evaluations started are waited for.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::Hash,
    pin::pin,
    sync::Arc,
    time::Duration,
};

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::{Lookup, ObjectRef, ObjectRefExtra, Store};
use tokio::{sync::mpsc, time::Instant};

/// When a policy's evaluation whose task died (a panic) is retried.
const AFTER_PANIC: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Due at this instant (with its sequence number, the tie-break of the timer map).
    Due(Instant, u64),
    /// Being evaluated; `again` when it was triggered meanwhile.
    Running { again: bool },
}

/// Due times and running evaluations, by key. Pure (the caller passes the time), so it is tested without a clock.
#[derive(Debug)]
pub struct Schedule<K> {
    state: HashMap<K, State>,
    timers: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K> Default for Schedule<K> {
    fn default() -> Self {
        Schedule { state: HashMap::new(), timers: BTreeMap::new(), seq: 0 }
    }
}

impl<K: Clone + Eq + Hash> Schedule<K> {
    /// Something asks for `key` to be evaluated at `at`: the earlier of this and its current due time, or once
    /// more after the evaluation in progress.
    pub fn trigger(&mut self, key: K, at: Instant) {
        match self.state.get_mut(&key) {
            Some(State::Running { again }) => *again = true,
            Some(State::Due(when, _)) if *when <= at => {}
            _ => self.set_due(key, at),
        }
    }

    fn set_due(&mut self, key: K, at: Instant) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(State::Due(when, old)) = self.state.insert(key.clone(), State::Due(at, seq)) {
            self.timers.remove(&(when, old));
        }
        self.timers.insert((at, seq), key);
    }

    /// The earliest due time.
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// A key due at `now` or before, now marked running.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        let (&(at, seq), _) = self.timers.iter().next()?;
        if at > now {
            return None;
        }
        let key = self.timers.remove(&(at, seq))?;
        self.state.insert(key.clone(), State::Running { again: false });
        Some(key)
    }

    /// `key`'s evaluation ended (or it was not started): due again after `requeue` (never, with `None`), or at
    /// once if it was triggered meanwhile.
    pub fn finished(&mut self, key: K, requeue: Option<Duration>, now: Instant) {
        match self.state.remove(&key) {
            Some(State::Running { again: true }) => self.set_due(key, now),
            Some(State::Due(when, seq)) => {
                // Not running (cannot happen): leave it as it was.
                self.state.insert(key, State::Due(when, seq));
            }
            _ => {
                if let Some(after) = requeue {
                    self.set_due(key, now + after);
                }
            }
        }
    }

    /// Whether `key` is being evaluated.
    pub fn is_running(&self, key: &K) -> bool {
        matches!(self.state.get(key), Some(State::Running { .. }))
    }

    /// How many keys are due or running.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether nothing is due or running.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
}

/// A scheduled object: its name and namespace, shared by its entries in the schedule (one allocation per policy
/// rather than four strings per entry).
type Key<K> = Arc<ObjectRef<K>>;

/// The key of `object`, without the resourceVersion and uid it was read with (which identity ignores).
fn bare<K: Lookup>(mut object: ObjectRef<K>) -> Key<K> {
    object.extra = ObjectRefExtra::default();
    Arc::new(object)
}

/// Reports a task's end, also when it panicked (then retried after [`AFTER_PANIC`]).
struct Report<K> {
    key: Option<K>,
    requeue: Option<Duration>,
    done: mpsc::UnboundedSender<(K, Option<Duration>)>,
}

impl<K> Drop for Report<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let _ = self.done.send((key, self.requeue));
        }
    }
}

/// Evaluates the objects of `store` as they become due until `shutdown`, then waits for those started.
/// `changes` (an object whose change is worth an evaluation) drives the watch behind `store`; each item of
/// `everything` makes every object in the store due now (ownership gained). `evaluate` returns when to come
/// back (`None`: only on a change).
pub async fn drive<K, Fut>(
    changes: impl Stream<Item = ObjectRef<K>>,
    everything: impl Stream<Item = ()>,
    store: Store<K>,
    shutdown: impl Future<Output = ()>,
    evaluate: impl Fn(Arc<K>) -> Fut,
) where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    let (done, mut finished) = mpsc::unbounded_channel::<(Key<K>, Option<Duration>)>();
    let mut schedule: Schedule<Key<K>> = Schedule::default();
    let mut changes = pin!(changes.fuse());
    let mut everything = pin!(everything.fuse());
    let mut shutdown = pin!(shutdown.fuse());
    let (mut running, mut ready, mut stopping) = (0usize, false, false);
    loop {
        if stopping && running == 0 {
            return;
        }
        let next = schedule.next_due();
        let timer = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)));
        tokio::select! {
            Some((key, requeue)) = finished.recv() => {
                running -= 1;
                schedule.finished(key, requeue, Instant::now());
            }
            () = &mut shutdown, if !stopping => stopping = true,
            change = changes.next(), if !stopping => match change {
                Some(key) => schedule.trigger(bare(key), Instant::now()),
                None => stopping = true,
            },
            Some(()) = everything.next(), if !stopping => {
                let now = Instant::now();
                for object in store.state() {
                    schedule.trigger(bare(ObjectRef::from_obj(&object)), now);
                }
            }
            Ok(()) = store.wait_until_ready(), if !ready => ready = true,
            () = timer, if ready && !stopping && next.is_some() => {
                let now = Instant::now();
                while let Some(key) = schedule.pop_due(now) {
                    let Some(object) = store.get(&key) else {
                        // Deleted since it was scheduled.
                        schedule.finished(key, None, now);
                        continue;
                    };
                    running += 1;
                    let work = evaluate(object);
                    let report = Report { key: Some(key), requeue: Some(AFTER_PANIC), done: done.clone() };
                    tokio::spawn(async move {
                        // The whole report moves in, so that it reports when the task ends, even by a panic.
                        let mut report = report;
                        report.requeue = work.await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn the_earliest_due_time_wins_and_a_due_key_runs_once() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.trigger("a", at(t, 10));
        s.trigger("a", at(t, 5));
        s.trigger("a", at(t, 20));
        assert_eq!(s.next_due(), Some(at(t, 5)));
        assert_eq!(s.pop_due(at(t, 4)), None);
        assert_eq!(s.pop_due(at(t, 5)), Some("a"));
        assert_eq!(s.pop_due(at(t, 100)), None, "one timer per key");
        assert!(s.is_running(&"a"));
    }

    #[test]
    fn a_trigger_during_an_evaluation_runs_it_again_right_after() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.trigger("a", t);
        assert_eq!(s.pop_due(t), Some("a"));
        s.trigger("a", t);
        assert_eq!(s.pop_due(at(t, 1)), None, "never two evaluations of one key at once");
        s.finished("a", Some(Duration::from_secs(15)), at(t, 2));
        assert_eq!(s.next_due(), Some(at(t, 2)), "again at once, not after the interval");
    }

    #[test]
    fn a_finished_evaluation_is_due_after_its_requeue_or_never() {
        let t = Instant::now();
        let mut s = Schedule::default();
        s.trigger("a", t);
        s.trigger("b", t);
        assert_eq!((s.pop_due(t), s.pop_due(t)), (Some("a"), Some("b")));
        s.finished("a", Some(Duration::from_secs(15)), at(t, 1));
        s.finished("b", None, at(t, 1));
        assert_eq!(s.next_due(), Some(at(t, 16)));
        assert_eq!(s.len(), 1, "b waits for a change");
        assert!(!s.is_empty());
    }

    /// The regression behind this module: kube-runtime's runner polled every dispatched reconcile at each
    /// wake-up, so each of N completions polled the N evaluations waiting for a slot. Here a waiting evaluation
    /// is polled when it is woken, however many others finish.
    #[tokio::test]
    async fn evaluations_waiting_for_a_slot_are_not_polled_when_others_finish() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::{reflector, watcher};

        struct Counted<F> {
            polls: Arc<AtomicUsize>,
            inner: std::pin::Pin<Box<F>>,
        }
        impl<F: Future> Future for Counted<F> {
            type Output = F::Output;
            fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
                self.polls.fetch_add(1, Ordering::SeqCst);
                self.inner.as_mut().poll(cx)
            }
        }

        let objects = 200;
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for i in 0..objects {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(format!("cm-{i}"));
            cm.metadata.namespace = Some("ns".into());
            writer.apply_watcher_event(&watcher::Event::InitApply(cm));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let keys: Vec<ObjectRef<ConfigMap>> = reader.state().iter().map(|o| ObjectRef::from_obj(&**o)).collect();

        // One slot: every evaluation but the running one waits for it.
        let slot = Arc::new(tokio::sync::Semaphore::new(1));
        let polls = Arc::new(AtomicUsize::new(0));
        let evaluated = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = {
            let (slot, polls, evaluated) = (slot.clone(), polls.clone(), evaluated.clone());
            drive(
                futures::stream::iter(keys).chain(futures::stream::pending()),
                futures::stream::pending(),
                reader,
                async {
                    let _ = stopped.await;
                },
                move |_| {
                    let (slot, evaluated) = (slot.clone(), evaluated.clone());
                    Counted {
                        polls: polls.clone(),
                        inner: Box::pin(async move {
                            let _held = slot.acquire_owned().await.expect("open");
                            tokio::task::yield_now().await;
                            evaluated.fetch_add(1, Ordering::SeqCst);
                            None
                        }),
                    }
                },
            )
        };
        let task = tokio::spawn(run);
        while evaluated.load(Ordering::SeqCst) < objects {
            tokio::task::yield_now().await;
        }
        let _ = stop.send(());
        task.await.expect("the loop ends on shutdown");
        // Each evaluation is polled when spawned, when its slot is granted and after its yield: a few times, not
        // once per other evaluation finishing (about objects² / 2 = 20,000 polls before).
        let per_evaluation = polls.load(Ordering::SeqCst) as f64 / objects as f64;
        assert!(per_evaluation <= 4.0, "each evaluation was polled {per_evaluation} times on average");
    }
}
