//! Publishing Events (events.k8s.io/v1) on a policy, one per thing that happened.
//!
//! kube-runtime's `Recorder` aggregates on a key that leaves out the note: four different scales became one
//! "Scaled up from 1 to 2 (x4)" although the latest was 4 to 5, because the series patch keeps the first note.
//! Here the note is part of the key (as in client-go's events broadcaster), and a change of replicas is never
//! aggregated at all: every scale is its own Event with its own from/to and reason, as the HPA's
//! `SuccessfulRescale` is. Only an identical repeat (same type, reason, action and note on the same object within
//! [`SERIES_TTL`]) becomes a series with a count.
//!
//! The cache is only a de-duplication aid: losing it (a restart) costs one extra Event, never a decision.

use std::{collections::HashMap, sync::Mutex};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// How long an identical repeat is counted into the earlier Event instead of creating a new one (kube-runtime's
/// and client-go's value).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published<'a> {
    pub warning: bool,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: &'a str,
    /// Whether an identical repeat may be counted into the earlier Event (false for changes of replicas).
    pub aggregate: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    note: String,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

#[derive(Clone, Debug)]
struct Series {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Creates Events as `reporting_controller`/`reporting_instance`, aggregating identical repeats only.
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<Key, Series>>,
    /// The last name suffix (nanoseconds), so that two Events in the same nanosecond get distinct names.
    last_suffix: Mutex<i128>,
}

impl EventRecorder {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        EventRecorder {
            client,
            controller: controller.into(),
            instance: instance.into(),
            series: Mutex::default(),
            last_suffix: Mutex::new(0),
        }
    }

    /// Creates the Event, or counts an identical repeat into the earlier one.
    pub async fn publish(&self, ev: &Published<'_>, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let key = Key {
            warning: ev.warning,
            reason: ev.reason.into(),
            action: ev.action.into(),
            note: ev.note.into(),
            namespace: regarding.namespace.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
        };
        let repeat =
            ev.aggregate.then(|| self.lock().get(&key).cloned()).flatten().filter(|s| s.last + SERIES_TTL > now);
        if let Some(series) = repeat {
            let count = series.count + 1;
            let patch = json!({ "series": EventSeries { count, last_observed_time: MicroTime(now) } });
            match api.patch(&series.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.lock().insert(key, Series { name: series.name, count, last: now });
                    return Ok(());
                }
                // Deleted meanwhile (events expire after an hour by default): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!("{}.{:x}", regarding.name.as_deref().unwrap_or(&self.controller), self.suffix(now));
        let event = Event {
            action: Some(ev.action.into()),
            reason: Some(ev.reason.into()),
            note: Some(ev.note.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            metadata: ObjectMeta { namespace: Some(namespace), name: Some(name.clone()), ..Default::default() },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        let mut series = self.lock();
        series.retain(|_, s| s.last + SERIES_TTL > now);
        if ev.aggregate {
            series.insert(key, Series { name, count: 1, last: now });
        }
        Ok(())
    }

    fn suffix(&self, now: Timestamp) -> i128 {
        let mut last = self.last_suffix.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = now.as_nanosecond().max(*last + 1);
        *last
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Series>> {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
