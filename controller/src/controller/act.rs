//! Act: patch the target's `/scale` when the decision differs (and Foresight may), then write status and
//! publish events.
//!
//! A scale is recorded in two steps, so that it survives a controller that stops half-way (a crash, a lost
//! node, a failed status write) without living in process memory:
//!
//! ```text
//!   1. status.pendingScale = the history entry      (merge patch on /status; fails → no scale, retry)
//!   2. PATCH /scale (resourceVersion precondition)  (fails → the next evaluation drops the pending entry)
//!   3. status: history += entry, pendingScale cleared, conditions, events
//! ```
//!
//! Stopped between 2 and 3, the next evaluation finds the target at the announced replicas and records the
//! entry as Foresight's own (cooldowns count from it; it is not taken for someone else's change) and publishes
//! its event; see [`report::settle_pending`].

use jiff::Timestamp;
use kube::{Api, Resource, ResourceExt, api::Patch};
use serde_json::{Map, Value, json};

use super::{
    Context, conflicts,
    error::Error,
    events::Published,
    observe::{Observation, object_key},
    report::{self, Mode, Notice, Outcome},
    target,
};
use crate::{
    api::{PAUSED_ANNOTATION, ScalingPolicy, ScalingPolicyStatus, convert::DEFAULT_HISTORY_LIMIT},
    engine::{Policy, Recommendation},
};

/// Whether Foresight may patch this policy's target.
pub fn mode(sp: &ScalingPolicy) -> Mode {
    if sp.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v == "true") {
        Mode::Paused
    } else if sp.spec.dry_run {
        Mode::DryRun
    } else {
        Mode::Active
    }
}

/// Applies a recommendation: scale, status, events.
pub async fn act(
    sp: &ScalingPolicy,
    ctx: &Context,
    old: &ScalingPolicyStatus,
    policy: &Policy,
    obs: &Observation,
    rec: &Recommendation,
) -> Result<(), Error> {
    // Only the oldest policy of a target acts, and none where an HPA or a ScaledObject scales it (unless the
    // policy overrides that): decided from the watches, once they have listed (see `conflicts`).
    ctx.conflicts.settled(conflicts::SETTLE_TIMEOUT).await;
    let conflict = ctx.conflicts.verdict_for(sp);
    let mode = match mode(sp) {
        Mode::Active if conflict.stand_down => Mode::StandDown,
        other => other,
    };
    let scale = rec.desired != rec.current && mode == Mode::Active;
    if scale && !ctx.owns_policy(sp) {
        // Leadership was lost during this evaluation: stop before touching anything.
        return Ok(());
    }
    let outcome = Outcome {
        now: obs.now,
        generation: sp.metadata.generation,
        policy,
        history_limit: sp.spec.history_limit.map(|l| l.clamp(1, 100) as usize).unwrap_or(DEFAULT_HISTORY_LIMIT),
        rec,
        forecast: obs.forecast.as_ref(),
        external: obs.external.clone(),
        mode,
        scaled: scale,
        notes: &obs.notes,
        conflict,
    };
    let new = report::next_status(old, &outcome);
    // What the API server holds once step 1 is done: the base of the final status patch, so that it clears
    // pendingScale. Only a scale changes it.
    let mut stored = std::borrow::Cow::Borrowed(old);
    if scale {
        let pending = new.history.first().cloned();
        patch_status(sp, ctx, &json!({ "status": { "pendingScale": &pending } })).await?;
        stored.to_mut().pending_scale = pending;
        if !ctx.owns_policy(sp) {
            // The Lease fence: this replica's renewal is too old to be sure nobody else holds the policy now.
            return Ok(());
        }
        target::patch_scale(&obs.api, &sp.spec.target_ref, rec.desired, obs.scale.resource_version.as_deref()).await?;
        let direction = if rec.desired > rec.current { "up" } else { "down" };
        let (ns, name) = object_key(sp);
        ctx.telemetry.scaled(&ns, &name, direction);
    }

    // The scale's events wait for its history entry: if this write fails, the next evaluation settles the
    // pending entry and publishes them then, so they are neither lost nor sent twice.
    write_status(sp, ctx, &stored, &new).await?;
    if let Some(entry) = &obs.settled {
        publish(sp, ctx, &report::settled_notice(entry)).await;
    }
    for notice in &report::notices(old, &new, &outcome) {
        publish(sp, ctx, notice).await;
    }
    Ok(())
}

/// Writes `new` through /status when it differs from `old` in more than the evaluation time.
pub async fn write_status(
    sp: &ScalingPolicy,
    ctx: &Context,
    old: &ScalingPolicyStatus,
    new: &ScalingPolicyStatus,
) -> Result<(), Error> {
    if !report::needs_write(old, new) || !ctx.owns_policy(sp) {
        return Ok(());
    }
    patch_status(sp, ctx, &status_patch(old, new)?).await
}

/// Sends a merge patch to the policy's `/status` (step 1 of a scale announces it with one).
async fn patch_status(sp: &ScalingPolicy, ctx: &Context, patch: &Value) -> Result<(), Error> {
    let (ns, name) = object_key(sp);
    // The response is read leniently: a stored spec the Rust types reject must not fail the status write.
    let api: Api<crate::api::RawScalingPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(&name, &target::patch_params(), &Patch::Merge(patch))
        .await
        .map_err(|source| Error::PatchStatus { source })?;
    Ok(())
}

/// The merge patch from `old` to `new`: `new` in full, with `null` for every field `old` had and `new` lacks
/// (a JSON merge patch keeps fields it does not mention, so a cleared field must be nulled explicitly).
pub fn status_patch(old: &ScalingPolicyStatus, new: &ScalingPolicyStatus) -> Result<Value, Error> {
    let old = serde_json::to_value(old)?;
    let new = serde_json::to_value(new)?;
    Ok(json!({ "status": with_removals(&old, new) }))
}

fn with_removals(old: &Value, new: Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut out = Map::new();
            for (k, v) in new {
                let merged = match old.get(&k) {
                    Some(o) => with_removals(o, v),
                    None => v,
                };
                out.insert(k, merged);
            }
            for k in old.keys() {
                out.entry(k.clone()).or_insert(Value::Null);
            }
            Value::Object(out)
        }
        (_, new) => new,
    }
}

/// Publishes an Event on the policy. A failure is logged, never fatal: events are for people, status is the
/// record.
pub async fn publish(sp: &ScalingPolicy, ctx: &Context, notice: &Notice) {
    if !ctx.owns_policy(sp) {
        return;
    }
    let note = truncate(&notice.note, 1000);
    let event = Published {
        warning: notice.warning,
        reason: notice.reason,
        action: notice.action,
        note: &note,
        // Every change of replicas is its own Event; only identical repeats of anything else are counted.
        aggregate: notice.action != report::SCALE_ACTION,
    };
    if let Err(error) = ctx.recorder.publish(&event, &sp.object_ref(&())).await {
        tracing::warn!(%error, reason = notice.reason, "cannot publish event");
    }
}

/// Reports a reconcile that could not evaluate: Ready=False with the reason, and an event when the reason is
/// new. Best effort: the original error is what the caller returns.
pub async fn report_failure(
    sp: &ScalingPolicy,
    ctx: &Context,
    old: &ScalingPolicyStatus,
    now: Timestamp,
    reason: &'static str,
    message: &str,
) {
    let new = report::failed_status(old, sp.metadata.generation, now, reason, message);
    let was = super::conditions::find(&old.conditions, super::conditions::READY);
    let is_new = was.is_none_or(|c| c.status != "False" || c.reason != reason);
    if let Err(error) = write_status(sp, ctx, old, &new).await {
        tracing::warn!(%error, "cannot write the failure to status");
    }
    if is_new {
        publish(sp, ctx, &Notice { warning: true, reason, action: "Reconcile", note: message.to_string() }).await;
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleared_fields_are_nulled_in_the_patch() {
        let old =
            ScalingPolicyStatus { consecutive_metric_failures: 3, desired_replicas: Some(2), ..Default::default() };
        let new = ScalingPolicyStatus { desired_replicas: Some(4), ..Default::default() };
        let patch = status_patch(&old, &new).expect("serializes");
        assert_eq!(patch, json!({ "status": { "desiredReplicas": 4, "consecutiveMetricFailures": null } }));
    }

    #[test]
    fn nested_fields_are_nulled_too() {
        let old = json!({ "a": { "b": 1, "c": 2 }, "d": [1, 2] });
        let new = json!({ "a": { "b": 1 }, "d": [3] });
        assert_eq!(with_removals(&old, new), json!({ "a": { "b": 1, "c": null }, "d": [3] }));
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1000 + "…".len());
        assert!(t.ends_with('…'));
    }
}
