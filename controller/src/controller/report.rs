//! From an evaluation to the status to write and the events to publish: pure functions, no I/O.
//!
//! ```text
//!   old status ─┐
//!   recommendation, mode, scaled? ─► next_status() ─► new status ─► needs_write(old, new)?
//!                                 └► notices(old, new) ─► Events (ScaledUp, MetricsUnavailable, ...)
//! ```

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{self, Observed};
use crate::{
    api::{
        EXTERNAL, Evaluation, HistoryEntry, MetricValue, Prediction, Proposal, RecommendationRecord,
        ScalingPolicyStatus,
    },
    engine::{
        self, Forecast, PolicyId, Recommendation, ScaleEvent, format, policy::PredictiveMode,
        predictive::required_replicas,
    },
};

/// External changes within [`FIGHT_WINDOW`] that make a replica fight.
pub const FIGHT_CHANGES: usize = 3;
/// The window over which external changes are counted.
pub const FIGHT_WINDOW: Duration = Duration::from_secs(600);

/// Whether Foresight may change the target's replicas for this policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Active,
    /// spec.dryRun: decide and report, never patch.
    DryRun,
    /// The paused annotation: decide and report, never patch.
    Paused,
    /// Another autoscaler acts on the target (an older ScalingPolicy, an HPA, a ScaledObject): decide and
    /// report, never patch; the Conflict condition says who.
    StandDown,
}

/// Everything one evaluation found and did, for status and events.
#[derive(Clone, Debug)]
pub struct Outcome<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub policy: &'a engine::Policy,
    pub history_limit: usize,
    pub rec: &'a Recommendation,
    pub forecast: Option<&'a Forecast>,
    /// A change of replicas by someone else, noticed by this evaluation.
    pub external: Option<HistoryEntry>,
    pub mode: Mode,
    /// The /scale patch to `rec.desired` went through.
    pub scaled: bool,
    /// Settings the controller overrode, in words (e.g. a clamped query timeout).
    pub notes: &'a [String],
    /// The other autoscalers of the target, and whether this policy stands down for them.
    pub conflict: super::conflicts::Verdict,
}

/// The action of the events that report a change of replicas.
pub const SCALE_ACTION: &str = "Scale";

/// An Event to publish on the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl Notice {
    fn normal(reason: &'static str, action: &'static str, note: String) -> Self {
        Notice { warning: false, reason, action, note }
    }
    fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Notice { warning: true, reason, action, note }
    }
}

/// A change of replicas made by someone else: `current` differs from the last value Foresight knew of. That is
/// the newest history entry when it is at least as recent as the last evaluation (our own scale, or one whose
/// status write is still pending), else the replicas the last evaluation saw, so that a `kubectl scale` before
/// Foresight ever scaled is noticed too.
pub fn detect_external(old: &ScalingPolicyStatus, current: u32, now: Timestamp) -> Option<HistoryEntry> {
    let last_evaluation = old.last_evaluation.as_ref().map(|e| e.time.0);
    let newest = old.history.first().map(|h| (h.time.0, h.to));
    let known = match (newest, old.current_replicas) {
        (Some((time, to)), Some(seen)) => {
            if last_evaluation.is_none_or(|e| time >= e) {
                to
            } else {
                seen
            }
        }
        (Some((_, to)), None) => to,
        (None, Some(seen)) => seen,
        (None, None) => return None,
    };
    let known_u = known.max(0) as u32;
    (known_u != current).then(|| HistoryEntry {
        time: Time(now),
        from: known,
        to: current as i32,
        reason: format!("replicas changed from {known} to {current} by someone else (not Foresight)"),
        policy: EXTERNAL.into(),
        metrics: Vec::new(),
    })
}

/// Settles a scale an earlier reconcile announced in `status.pendingScale` but did not record (the controller
/// stopped, or its status write failed, between the /scale patch and the history entry). If the target has the
/// announced replicas the patch went through: the entry moves into `old.history` (so cooldowns count from it and
/// it is not mistaken for someone else's change) and is returned. Otherwise the patch never happened and the
/// entry is dropped; a count that is neither is someone else's change, which [`detect_external`] reports.
/// `old.pendingScale` itself is kept, so the next status write (which never carries one) clears it.
pub fn settle_pending(old: &mut ScalingPolicyStatus, current: u32) -> Option<HistoryEntry> {
    let pending = old.pending_scale.clone()?;
    if i64::from(pending.to) != i64::from(current) || old.history.first() == Some(&pending) {
        return None;
    }
    old.history.insert(0, pending.clone());
    old.last_scale_time = Some(pending.time.clone());
    Some(pending)
}

/// The event for a scale recorded by [`settle_pending`]: the reconcile that made it stopped before its events.
pub fn settled_notice(entry: &HistoryEntry) -> Notice {
    let (reason, verb) = if entry.to > entry.from { ("ScaledUp", "Scaled up") } else { ("ScaledDown", "Scaled down") };
    Notice::normal(
        reason,
        SCALE_ACTION,
        format!(
            "{verb} from {} to {} at {}: {} (recorded by the next evaluation: the one that scaled stopped first)",
            entry.from, entry.to, entry.time.0, entry.reason
        ),
    )
}

/// Status history as the engine's scale events, newest first.
pub fn scale_events(history: &[HistoryEntry]) -> Vec<ScaleEvent> {
    history
        .iter()
        .map(|h| ScaleEvent {
            time: h.time.0,
            from: h.from.max(0) as u32,
            to: h.to.max(0) as u32,
            external: h.policy == EXTERNAL,
        })
        .collect()
}

/// Status recommendations as the engine's records.
pub fn recommendation_records(status: &ScalingPolicyStatus) -> Vec<engine::RecommendationRecord> {
    status
        .recommendations
        .iter()
        .map(|r| engine::RecommendationRecord { time: r.time.0, replicas: r.replicas.max(0) as u32 })
        .collect()
}

/// The status after an evaluation.
pub fn next_status(old: &ScalingPolicyStatus, o: &Outcome<'_>) -> ScalingPolicyStatus {
    let rec = o.rec;
    let mut history = old.history.clone();
    if let Some(external) = &o.external {
        history.insert(0, external.clone());
    }
    let mut last_scale_time = old.last_scale_time.clone();
    if o.scaled {
        history.insert(
            0,
            HistoryEntry {
                time: Time(o.now),
                from: rec.current as i32,
                to: rec.desired as i32,
                reason: rec.reason.clone(),
                policy: rec.winner.as_ref().map(ToString::to_string).unwrap_or_else(|| "engine".into()),
                metrics: metric_pairs(o),
            },
        );
        last_scale_time = Some(Time(o.now));
    }
    history.truncate(o.history_limit.max(1));

    let current = if o.scaled { rec.desired } else { rec.current };
    let not_found = never_found(old, o);
    let mut status = ScalingPolicyStatus {
        observed_generation: o.generation,
        current_replicas: Some(current as i32),
        desired_replicas: Some(rec.desired as i32),
        last_scale_time,
        last_evaluation: Some(evaluation(o, &not_found)),
        conditions: Vec::new(),
        history,
        recommendations: rec
            .recommendations
            .iter()
            .map(|r| RecommendationRecord { time: Time(r.time), replicas: r.replicas as i32 })
            .collect(),
        consecutive_metric_failures: rec.consecutive_failures.min(i32::MAX as u32) as i32,
        // Settled or dropped by this evaluation (see `settle_pending`); a new scale's is written separately.
        pending_scale: None,
    };
    let mut observed = observed(o, &status, &not_found);
    match &o.conflict.conflict {
        Some((reason, message)) => observed.push(Observed::new(conditions::CONFLICT, true, *reason, message.clone())),
        // Said only once a conflict has been seen: most policies never have one.
        None if conditions::find(&old.conditions, conditions::CONFLICT).is_some() => observed.push(Observed::new(
            conditions::CONFLICT,
            false,
            "NoConflict",
            "no other ScalingPolicy, HorizontalPodAutoscaler or ScaledObject scales the target",
        )),
        None => {}
    }
    status.conditions = conditions::compute(&old.conditions, &observed, o.generation, o.now);
    status
}

/// The state of a metric in `status.lastEvaluation.metrics` whose every answer since the spec's generation was
/// applied had no series.
pub const NOT_FOUND: &str = "NotFound";

/// The reason of `Ready` and `MetricsAvailable` while a metric is [`NOT_FOUND`].
const METRIC_NOT_FOUND: &str = "MetricNotFound";

/// The metrics whose every answer at this generation had no series: most likely a wrong metric name or label,
/// or a target that does not export it (yet), not an outage, so it is said as a persistent `Ready=False`. The
/// memory is the metric's state in status ([`NOT_FOUND`]), so it holds across evaluations and restarts: the
/// first evaluation of a generation starts it, an answer with a series ends it (a later empty answer is then an
/// ordinary `Empty`), and a failed query ends it too, since nothing can be said of series Prometheus did not
/// answer for.
fn never_found<'r>(old: &ScalingPolicyStatus, o: &Outcome<'r>) -> Vec<&'r str> {
    let previous = old.last_evaluation.as_ref().filter(|_| old.observed_generation == o.generation);
    o.rec
        .readings
        .iter()
        .filter(|r| matches!(r.value, Err(engine::Missing::Empty)))
        .filter(|r| match previous.and_then(|e| e.metrics.iter().find(|m| m.name == r.metric)) {
            None => true,
            Some(before) => before.state == NOT_FOUND,
        })
        .map(|r| r.metric.as_str())
        .collect()
}

/// The status after a reconcile that could not evaluate (invalid spec, target missing, Prometheus
/// misconfigured): only Ready changes, everything Foresight remembers is kept.
pub fn failed_status(
    old: &ScalingPolicyStatus,
    generation: Option<i64>,
    now: Timestamp,
    reason: &str,
    message: &str,
) -> ScalingPolicyStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    status.conditions = conditions::compute(
        &old.conditions,
        &[Observed::new(conditions::READY, false, reason, message)],
        generation,
        now,
    );
    status
}

/// How old the stored evaluation may grow before an evaluation that changed nothing a person reads is written
/// anyway, so that `status.lastEvaluation.time` says the policy is still evaluated. Between refreshes the
/// evaluations that confirm it are in `/metrics` (`foresight_reconciles_total`, the per-policy gauges).
pub const STATUS_REFRESH: Duration = Duration::from_secs(300);

/// Whether `new` is worth a status write over `old`: it differs in something a person or the next evaluation
/// reads, or the stored evaluation is [`STATUS_REFRESH`] old. Not the evaluation time alone, and not a metric's
/// raw value alone while its reading (`current`, "61%") is the same: a write per policy per interval is a
/// kube-apiserver write and a watch event for every watcher, 667 a second at 10,000 policies every 15 s, for
/// numbers that differ in digits nobody reads. Forecast figures compare at three significant digits.
pub fn needs_write(old: &ScalingPolicyStatus, new: &ScalingPolicyStatus) -> bool {
    let mut a = old.clone();
    let mut b = new.clone();
    if let (Some(ea), Some(eb)) = (a.last_evaluation.as_mut(), b.last_evaluation.as_mut()) {
        let age = eb.time.0.duration_since(ea.time.0);
        if age >= jiff::SignedDuration::try_from(STATUS_REFRESH).unwrap_or(jiff::SignedDuration::MAX) {
            return true;
        }
        ea.time = eb.time.clone();
        for (ma, mb) in ea.metrics.iter_mut().zip(&eb.metrics) {
            if ma.name == mb.name && ma.current == mb.current && ma.state == mb.state {
                ma.value = mb.value;
            }
        }
        if let (Some(pa), Some(pb)) = (ea.prediction.as_mut(), eb.prediction.as_ref()) {
            for (x, y) in [(&mut pa.forecast, pb.forecast), (&mut pa.error, pb.error), (&mut pa.margin, pb.margin)] {
                if x.map(significant) == y.map(significant) {
                    *x = y;
                }
            }
        }
    }
    // Recommendation records are re-stamped while the value holds; only their values matter for a write.
    let values = |s: &ScalingPolicyStatus| s.recommendations.iter().map(|r| r.replicas).collect::<Vec<_>>();
    if values(&a) == values(&b) {
        a.recommendations = b.recommendations.clone();
    }
    a != b
}

/// A figure at three significant digits, as a person compares two readings of it.
fn significant(v: f64) -> String {
    format!("{v:.2e}")
}

/// The events of an evaluation, from what it did and how the conditions moved.
pub fn notices(old: &ScalingPolicyStatus, new: &ScalingPolicyStatus, o: &Outcome<'_>) -> Vec<Notice> {
    let rec = o.rec;
    let mut out = Vec::new();
    if o.scaled {
        let (reason, verb) =
            if rec.desired > rec.current { ("ScaledUp", "Scaled up") } else { ("ScaledDown", "Scaled down") };
        out.push(Notice::normal(
            reason,
            SCALE_ACTION,
            format!("{verb} from {} to {}: {}", rec.current, rec.desired, rec.reason),
        ));
        if rec.is_predictive_scale_up() {
            out.push(Notice::normal(
                "PredictiveScaleUp",
                SCALE_ACTION,
                format!("Scaled up ahead of forecast load from {} to {}: {}", rec.current, rec.desired, rec.reason),
            ));
        }
    } else if rec.desired != rec.current && matches!(o.mode, Mode::DryRun | Mode::Paused) {
        let why = if o.mode == Mode::DryRun { "dry run" } else { "paused" };
        out.push(Notice::normal(
            "DryRunDecision",
            "Decide",
            format!("Would scale from {} to {} ({why}): {}", rec.current, rec.desired, rec.reason),
        ));
    }
    let changed = |type_: &str, status: &str| {
        let now = conditions::find(&new.conditions, type_);
        let before = conditions::find(&old.conditions, type_);
        now.is_some_and(|c| c.status == status)
            && before.is_none_or(|b| b.status != status || b.reason != now.map(|c| c.reason.as_str()).unwrap_or(""))
    };
    if changed(conditions::METRICS_AVAILABLE, "False") {
        let condition = conditions::find(&new.conditions, conditions::METRICS_AVAILABLE);
        let failure = match condition.filter(|c| c.reason == METRIC_NOT_FOUND) {
            Some(c) => c.message.clone(),
            None => rec.missing_metrics().map(|(m, why)| format!("{m}: {why}")).collect::<Vec<_>>().join("; "),
        };
        out.push(Notice::warning("MetricsUnavailable", "ReadMetrics", failure));
    }
    if rec.fallback_active && changed(conditions::METRICS_AVAILABLE, "False") {
        out.push(Notice::warning("FallbackActive", "Decide", rec.reason.clone()));
    }
    if changed(conditions::SCALING_LIMITED, "True") {
        let message = conditions::find(&new.conditions, conditions::SCALING_LIMITED).map(|c| c.message.clone());
        out.push(Notice::normal("ScaleLimited", "Decide", message.unwrap_or_default()));
    }
    // One Warning when a conflict appears or changes (another object joins, the one that acts changes), not
    // one per evaluation.
    if let Some(now) = conditions::find(&new.conditions, conditions::CONFLICT).filter(|c| c.status == "True") {
        let before = conditions::find(&old.conditions, conditions::CONFLICT);
        if before.is_none_or(|b| b.status != "True" || b.message != now.message)
            && let Some((reason, message)) = &o.conflict.conflict
        {
            out.push(Notice::warning(reason, "DetectConflict", message.clone()));
        }
    }
    if o.external.is_some() && conditions::is_true(&new.conditions, conditions::REPLICA_FIGHT) {
        let message = conditions::find(&new.conditions, conditions::REPLICA_FIGHT).map(|c| c.message.clone());
        out.push(Notice::warning("ReplicaFight", "DetectExternalChange", message.unwrap_or_default()));
    }
    out
}

fn observed(o: &Outcome<'_>, status: &ScalingPolicyStatus, not_found: &[&str]) -> Vec<Observed> {
    let rec = o.rec;
    let mut ready = format!("evaluated every {}", format::duration(o.policy.interval));
    for note in o.notes {
        ready.push_str("; ");
        ready.push_str(note);
    }
    let not_found_message = (!not_found.is_empty()).then(|| {
        let generation = o.generation.map(|g| format!(" (generation {g})")).unwrap_or_default();
        format!(
            "{}: Prometheus has had no series for {} since this spec{generation} was applied; check the metric \
             and label names, and that the target exports {}",
            not_found.join(", "),
            if not_found.len() == 1 { "its query" } else { "their queries" },
            if not_found.len() == 1 { "it" } else { "them" },
        )
    });
    let mut out = vec![match (o.mode, &o.conflict.conflict, &not_found_message) {
        (Mode::StandDown, Some((_, why)), _) => {
            Observed::new(conditions::READY, false, "StandingDown", format!("{ready}; not scaling: {why}"))
        }
        (_, _, Some(message)) => {
            Observed::new(conditions::READY, false, METRIC_NOT_FOUND, format!("{message}; {ready}"))
        }
        _ => Observed::new(conditions::READY, true, "Evaluated", ready),
    }];

    // Why each metric is missing, in words (the age of a stale sample is left out: it changes every evaluation
    // and would rewrite the condition each time).
    // Metrics that fail for the same reason (one Prometheus down, a breaker open) share one mention of it.
    let mut grouped: Vec<(Vec<&str>, String)> = Vec::new();
    // A metric never found is said on its own (below), not again among the missing.
    for (m, why) in rec.missing_metrics().filter(|(m, _)| !not_found.contains(m)) {
        let why = match why {
            engine::Missing::Stale { .. } => "latest sample is stale".to_string(),
            other => other.to_string(),
        };
        match grouped.iter_mut().find(|(_, w)| *w == why) {
            Some((names, _)) => names.push(m),
            None => grouped.push((vec![m], why)),
        }
    }
    let missing: Vec<String> = grouped.iter().map(|(names, why)| format!("{}: {why}", names.join(", "))).collect();
    // No requests is information, not an outage: said in words, never a warning.
    let idle: Vec<&str> = rec.idle_metrics().collect();
    let idle = if idle.is_empty() { String::new() } else { format!(" (no requests: {})", idle.join(", ")) };
    out.push(if missing.is_empty() && not_found_message.is_none() {
        Observed::new(
            conditions::METRICS_AVAILABLE,
            true,
            "MetricsRead",
            format!("all {} metrics read{idle}", rec.readings.len()),
        )
    } else if rec.fallback_active {
        Observed::new(conditions::METRICS_AVAILABLE, false, "FallbackActive", rec.reason.clone())
    } else if let Some(message) = not_found_message {
        let others = if missing.is_empty() { String::new() } else { format!("; missing: {}", missing.join("; ")) };
        Observed::new(conditions::METRICS_AVAILABLE, false, METRIC_NOT_FOUND, format!("{message}{others}"))
    } else if rec.missing_metrics().count() == rec.readings.len() {
        Observed::new(
            conditions::METRICS_AVAILABLE,
            false,
            "FailedGetMetric",
            format!("no metric could be read ({})", missing.join("; ")),
        )
    } else {
        Observed::new(
            conditions::METRICS_AVAILABLE,
            false,
            "FailedGetMetric",
            format!("missing: {}", missing.join("; ")),
        )
    });

    let scaling_disabled = rec.limited_by.iter().any(|l| matches!(l, engine::LimitedBy::ScalingDisabled));
    out.push(match o.mode {
        Mode::Paused => Observed::new(
            conditions::SCALING_ACTIVE,
            false,
            "Paused",
            format!("annotation {}=\"true\": evaluating and reporting only", crate::api::PAUSED_ANNOTATION),
        ),
        Mode::DryRun => Observed::new(
            conditions::SCALING_ACTIVE,
            false,
            "DryRun",
            "spec.dryRun is true: evaluating and reporting only",
        ),
        Mode::StandDown => Observed::new(
            conditions::SCALING_ACTIVE,
            false,
            "StandingDown",
            o.conflict.blocker.clone().unwrap_or_else(|| "another autoscaler scales the target".into()),
        ),
        Mode::Active if scaling_disabled => Observed::new(
            conditions::SCALING_ACTIVE,
            false,
            "ScalingDisabled",
            engine::LimitedBy::ScalingDisabled.to_string(),
        ),
        Mode::Active => {
            Observed::new(conditions::SCALING_ACTIVE, true, "Active", "Foresight sets the target's replicas")
        }
    });

    out.push(match rec.limited_by.first() {
        Some(first) => Observed::new(
            conditions::SCALING_LIMITED,
            true,
            first.condition_reason(),
            rec.limited_by.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        ),
        None => Observed::new(conditions::SCALING_LIMITED, false, "WithinLimits", "the decision was not limited"),
    });

    let since = o.now.checked_sub(jiff::SignedDuration::try_from(FIGHT_WINDOW).unwrap_or_default()).unwrap_or(o.now);
    let external = status.history.iter().filter(|h| h.policy == EXTERNAL && h.time.0 >= since).count();
    out.push(if o.mode == Mode::StandDown {
        // The autoscaler that acts changes the replicas: expected, not a fight this policy takes part in.
        Observed::new(conditions::REPLICA_FIGHT, false, "StandingDown", "not scaling, so not fighting over replicas")
    } else if external >= FIGHT_CHANGES {
        Observed::new(
            conditions::REPLICA_FIGHT,
            true,
            "ExternalChanges",
            format!(
                "replicas were changed by someone else {external} times in the last {}; another controller, a GitOps tool or a person is setting them too (pause this policy or remove the other writer)",
                format::duration(FIGHT_WINDOW)
            ),
        )
    } else {
        Observed::new(conditions::REPLICA_FIGHT, false, "NoFight", "no repeated external changes of replicas")
    });
    out
}

fn evaluation(o: &Outcome<'_>, not_found: &[&str]) -> Evaluation {
    let rec = o.rec;
    let metrics = rec
        .readings
        .iter()
        .map(|r| MetricValue {
            name: r.metric.clone(),
            value: r.value.as_ref().ok().copied(),
            current: Some(if not_found.contains(&r.metric.as_str()) {
                "missing: no series since this spec was applied".to_string()
            } else {
                metric_summary(o.policy, r)
            }),
            state: match &r.value {
                _ if not_found.contains(&r.metric.as_str()) => NOT_FOUND.into(),
                Ok(_) => "Ok".into(),
                Err(m) => m.state().into(),
            },
            recommendation: rec
                .proposals
                .iter()
                .filter(|p| p.policy.metric() == Some(r.metric.as_str()))
                .filter_map(|p| p.replicas)
                .max()
                .map(|r| r as i32),
        })
        .collect();
    let proposals = rec
        .proposals
        .iter()
        .map(|p| Proposal {
            policy: p.policy.to_string(),
            replicas: p.replicas.map(|r| r as i32),
            reason: p.reason.clone(),
        })
        .collect();
    Evaluation {
        time: Time(o.now),
        metrics,
        proposals,
        prediction: prediction(o),
        decision: rec.decision.as_str().into(),
        reason: match (o.mode, &o.conflict.blocker) {
            (Mode::StandDown, Some(blocker)) => format!("standing down ({blocker}): {}", rec.reason),
            _ => rec.reason.clone(),
        },
        limited_by: rec.limited_by.iter().map(|l| l.kind().to_string()).collect(),
    }
}

fn prediction(o: &Outcome<'_>) -> Option<Prediction> {
    let rule = o.policy.predictive.as_ref()?;
    let proposal = o.rec.proposals.iter().find(|p| matches!(p.policy, PolicyId::Predictive(_)));
    let used = rule.mode == PredictiveMode::Scale && proposal.is_some_and(|p| p.replicas.is_some());
    let reason = proposal.map(|p| p.reason.clone()).unwrap_or_else(|| "no forecast available".into());
    let horizon = format::duration(rule.lookahead);
    Some(match o.forecast {
        Some(Forecast::Ready { peak, samples, error, detail }) => Prediction {
            forecast: Some(*peak),
            horizon,
            required_replicas: Some(required_replicas(rule, *peak) as i32),
            samples: (*samples).min(i32::MAX as usize) as i32,
            error: Some(*error),
            periods: detail
                .periods
                .iter()
                .map(|&p| format::duration(Duration::from_secs_f64(display_period(p))))
                .collect(),
            margin: Some(detail.margin),
            margin_basis: Some(detail.margin_basis.clone()),
            used,
            reason,
        },
        Some(Forecast::Abstain { samples, periods, .. }) => Prediction {
            forecast: None,
            horizon,
            required_replicas: None,
            samples: (*samples).min(i32::MAX as usize) as i32,
            error: None,
            periods: periods.iter().map(|&p| format::duration(Duration::from_secs_f64(display_period(p)))).collect(),
            used: false,
            reason,
            ..Prediction::default()
        },
        None => Prediction {
            forecast: None,
            horizon,
            required_replicas: None,
            samples: 0,
            error: None,
            used: false,
            reason,
            ..Prediction::default()
        },
    })
}

/// A reading as `kubectl describe` should show it: the value in its unit next to each target or bound that uses
/// it ("153% / target 70%", "310ms > 300ms", "0.2% < 1% (scale-down veto)"), or why it is missing.
pub fn metric_summary(policy: &engine::Policy, r: &engine::Reading) -> String {
    let kind = policy.metric(&r.metric).map(|m| m.kind).unwrap_or(engine::policy::MetricKind::Query);
    let v = match &r.value {
        Ok(v) => *v,
        Err(missing) => return format!("missing: {missing}"),
    };
    let f = |x: f64| format::value(kind, x);
    let mut parts = vec![f(v)];
    for t in policy.targets.iter().filter(|t| t.metric == r.metric) {
        parts.push(match t.kind {
            engine::policy::TargetKind::Value => format!("/ target {}", f(t.target)),
            engine::policy::TargetKind::AverageValue => format!("/ target {} per replica", f(t.target)),
        });
    }
    for t in policy.thresholds.iter().filter(|t| t.metric == r.metric) {
        let up = t.up.as_ref().map(|b| b.value);
        let down = t.down.as_ref().map(|b| b.value);
        parts.push(match (up, down) {
            (Some(u), _) if v > u => format!("> {} (scale-up bound)", f(u)),
            (_, Some(d)) if v < d => format!("< {} (scale-down bound)", f(d)),
            (Some(u), Some(d)) => format!("within {}..{}", f(d), f(u)),
            (Some(u), None) => format!("<= {} (scale-up bound)", f(u)),
            (None, Some(d)) => format!(">= {} (scale-down bound)", f(d)),
            (None, None) => continue,
        });
    }
    if let Some(veto) = policy.metric(&r.metric).and_then(|m| m.veto_above) {
        let cmp = if v > veto { ">" } else { "<=" };
        parts.push(format!("{cmp} {} (scale-down veto)", f(veto)));
    }
    parts.join(" ")
}

/// "name=value" pairs of the readings, in the metric's unit.
fn metric_pairs(o: &Outcome<'_>) -> Vec<String> {
    o.rec
        .readings
        .iter()
        .map(|r| {
            let kind = o.policy.metric(&r.metric).map(|m| m.kind).unwrap_or(engine::policy::MetricKind::Query);
            match &r.value {
                Ok(v) => format!("{}={}", r.metric, format::value(kind, *v)),
                Err(m) => format!("{}={}", r.metric, m.state()),
            }
        })
        .collect()
}

/// A detected period as status shows it: to the minute from ten minutes up. A period found in the history is
/// only as precise as a fraction of the sample step (a minute or more), so "59m59s" would claim a precision
/// the estimate does not have; "1h" says what was found.
fn display_period(secs: f64) -> f64 {
    if secs >= 600.0 { (secs / 60.0).round() * 60.0 } else { secs.round() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Decision, LimitedBy, Missing, Reading};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).expect("valid")
    }

    fn policy() -> engine::Policy {
        engine::Policy {
            min_replicas: 1,
            max_replicas: 10,
            interval: Duration::from_secs(15),
            metrics: vec![engine::policy::MetricSpec {
                name: "cpu".into(),
                kind: engine::policy::MetricKind::Cpu,
                veto_above: None,
                allow_negative: false,
            }],
            thresholds: vec![],
            targets: vec![],
            demand: vec![],
            predictive: None,
            up: engine::policy::DirectionRules::default_up(),
            down: engine::policy::DirectionRules::default_down(),
            fallback: engine::policy::Fallback { failure_threshold: 3, replicas: None },
            staleness: Duration::from_secs(120),
        }
    }

    fn rec(current: u32, desired: u32, value: Result<f64, Missing>) -> Recommendation {
        Recommendation {
            current,
            desired,
            decision: match desired.cmp(&current) {
                std::cmp::Ordering::Greater => Decision::ScaleUp,
                std::cmp::Ordering::Less => Decision::ScaleDown,
                std::cmp::Ordering::Equal => Decision::Hold,
            },
            readings: vec![Reading { metric: "cpu".into(), value }],
            proposals: vec![engine::Proposal {
                policy: PolicyId::Target("cpu".into()),
                replicas: Some(desired),
                reason: "cpu 90% vs target 60%".into(),
                shadow: false,
                floor: None,
            }],
            winner: (desired != current).then(|| PolicyId::Target("cpu".into())),
            limited_by: vec![],
            reason: "cpu 90% vs target 60%".into(),
            recommendations: vec![engine::RecommendationRecord { time: at(0), replicas: desired }],
            consecutive_failures: 0,
            fallback_active: false,
        }
    }

    fn outcome<'a>(p: &'a engine::Policy, r: &'a Recommendation, now: Timestamp, scaled: bool) -> Outcome<'a> {
        Outcome {
            now,
            generation: Some(1),
            policy: p,
            history_limit: 20,
            rec: r,
            forecast: None,
            external: None,
            mode: Mode::Active,
            scaled,
            notes: &[],
            conflict: Default::default(),
        }
    }

    #[test]
    fn a_scale_adds_a_history_entry_and_an_event() {
        let p = policy();
        let r = rec(2, 3, Ok(90.0));
        let o = outcome(&p, &r, at(100), true);
        let old = ScalingPolicyStatus::default();
        let new = next_status(&old, &o);
        assert_eq!(new.history.len(), 1);
        let h = &new.history[0];
        assert_eq!((h.from, h.to, h.policy.as_str()), (2, 3, "target/cpu"));
        assert_eq!(h.metrics, ["cpu=90%"]);
        assert_eq!(new.current_replicas, Some(3));
        assert_eq!(new.last_scale_time, Some(Time(at(100))));
        let events = notices(&old, &new, &o);
        assert_eq!(events[0].reason, "ScaledUp");
        assert_eq!(events[0].note, "Scaled up from 2 to 3: cpu 90% vs target 60%");
        assert!(conditions::is_true(&new.conditions, conditions::SCALING_ACTIVE));
    }

    #[test]
    fn describe_shows_each_metric_in_its_unit_next_to_its_target_or_bound() {
        use engine::policy::{Amount, Bound, MetricKind, MetricSpec, TargetKind, TargetRule, ThresholdRule};
        let mut p = policy();
        let spec =
            |name: &str, kind, veto_above| MetricSpec { name: name.into(), kind, veto_above, allow_negative: false };
        p.metrics = vec![
            spec("cpu", MetricKind::Cpu, None),
            spec("p99", MetricKind::Latency, None),
            spec("errors", MetricKind::ErrorRate, Some(0.01)),
            spec("queue", MetricKind::Query, None),
        ];
        p.targets = vec![TargetRule { metric: "cpu".into(), target: 70.0, kind: TargetKind::Value, tolerance: 0.1 }];
        let bound = |value| Bound { value, for_: Duration::from_secs(60), step: Amount::Pods(1) };
        p.thresholds = vec![ThresholdRule { metric: "p99".into(), up: Some(bound(0.3)), down: Some(bound(0.1)) }];
        let mut r = rec(4, 4, Ok(152.95253167308675));
        r.readings.extend([
            Reading { metric: "p99".into(), value: Ok(0.31) },
            Reading { metric: "errors".into(), value: Ok(0.053) },
            Reading { metric: "queue".into(), value: Err(Missing::QueryFailed("connection refused".into())) },
        ]);
        let status = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &r, at(100), false));
        // What the generic describer prints: the field as it is in the stored object.
        let json = serde_json::to_value(&status).expect("serializes");
        let shown: Vec<(&str, &str)> = json["lastEvaluation"]["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| (m["name"].as_str().expect("name"), m["current"].as_str().expect("current")))
            .collect();
        assert_eq!(
            shown,
            [
                ("cpu", "153% / target 70%"),
                ("p99", "310ms > 300ms (scale-up bound)"),
                ("errors", "5.3% > 1% (scale-down veto)"),
                ("queue", "missing: query failed: connection refused"),
            ]
        );
    }

    #[test]
    fn one_cause_of_several_missing_metrics_is_said_once() {
        let mut p = policy();
        p.metrics.push(engine::policy::MetricSpec {
            name: "p99".into(),
            kind: engine::policy::MetricKind::Latency,
            veto_above: None,
            allow_negative: false,
        });
        let down = || Err(Missing::QueryFailed("cannot reach Prometheus: connection refused".into()));
        let mut r = rec(3, 3, down());
        r.readings.push(Reading { metric: "p99".into(), value: down() });
        let status = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &r, at(100), false));
        let c = conditions::find(&status.conditions, conditions::METRICS_AVAILABLE).expect("condition");
        assert_eq!(
            c.message,
            "no metric could be read (cpu, p99: query failed: cannot reach Prometheus: connection refused)"
        );
    }

    #[test]
    fn a_metric_never_found_since_the_spec_was_applied_is_a_persistent_ready_false() {
        let p = policy();
        let empty = rec(3, 3, Err(Missing::Empty));
        let reason = |s: &ScalingPolicyStatus, t| conditions::find(&s.conditions, t).map(|c| c.reason.clone());
        let state = |s: &ScalingPolicyStatus| s.last_evaluation.as_ref().map(|e| e.metrics[0].state.clone());

        let first = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &empty, at(0), false));
        let ready = conditions::find(&first.conditions, conditions::READY).expect("ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "MetricNotFound"));
        assert_eq!(
            ready.message,
            "cpu: Prometheus has had no series for its query since this spec (generation 1) was applied; check \
             the metric and label names, and that the target exports it; evaluated every 15s"
        );
        assert_eq!(reason(&first, conditions::METRICS_AVAILABLE).as_deref(), Some("MetricNotFound"));
        assert_eq!(state(&first).as_deref(), Some(NOT_FOUND));
        let events = notices(&ScalingPolicyStatus::default(), &first, &outcome(&p, &empty, at(0), false));
        assert!(events.iter().any(|e| e.warning && e.note.starts_with("cpu: Prometheus has had no series")));

        // It stays so, evaluation after evaluation (the memory is in status), and it is written once.
        let second = next_status(&first, &outcome(&p, &empty, at(15), false));
        assert_eq!(reason(&second, conditions::READY).as_deref(), Some("MetricNotFound"));
        assert!(!needs_write(&first, &second));

        // A series ends it; an empty answer after that is an ordinary gap under Ready=True.
        let read = next_status(&second, &outcome(&p, &rec(3, 3, Ok(60.0)), at(30), false));
        assert_eq!(reason(&read, conditions::READY).as_deref(), Some("Evaluated"));
        let gap = next_status(&read, &outcome(&p, &empty, at(45), false));
        assert_eq!(reason(&gap, conditions::READY).as_deref(), Some("Evaluated"));
        assert_eq!(reason(&gap, conditions::METRICS_AVAILABLE).as_deref(), Some("FailedGetMetric"));
        assert_eq!(state(&gap).as_deref(), Some("Empty"));

        // A new spec starts over: it may have changed the query.
        let mut o = outcome(&p, &empty, at(60), false);
        o.generation = Some(2);
        let changed = next_status(&gap, &o);
        assert_eq!(reason(&changed, conditions::READY).as_deref(), Some("MetricNotFound"));
        assert!(
            conditions::find(&changed.conditions, conditions::READY)
                .is_some_and(|c| c.message.contains("generation 2"))
        );
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let p = policy();
        let mut status = ScalingPolicyStatus::default();
        for i in 0..5u32 {
            let r = rec(i + 1, i + 2, Ok(90.0));
            let mut o = outcome(&p, &r, at(i as i64 * 60), true);
            o.history_limit = 3;
            status = next_status(&status, &o);
        }
        let tos: Vec<i32> = status.history.iter().map(|h| h.to).collect();
        assert_eq!(tos, [6, 5, 4]);
    }

    #[test]
    fn an_unchanged_evaluation_needs_no_write() {
        let p = policy();
        let r = rec(3, 3, Ok(60.0));
        let first = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &r, at(0), false));
        let mut r2 = r.clone();
        r2.recommendations = vec![engine::RecommendationRecord { time: at(15), replicas: 3 }];
        let second = next_status(&first, &outcome(&p, &r2, at(15), false));
        assert!(!needs_write(&first, &second));
        let moved = next_status(&first, &outcome(&p, &rec(3, 3, Ok(61.0)), at(30), false));
        assert!(needs_write(&first, &moved), "a new metric reading is worth writing");
    }

    #[test]
    fn digits_nobody_reads_are_not_written_until_the_evaluation_is_five_minutes_old() {
        let p = policy();
        let first = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &rec(3, 3, Ok(60.2)), at(0), false));
        // 60.2 % and 59.9 % both read "60%": the raw value alone is no reason to write.
        let jitter = next_status(&first, &outcome(&p, &rec(3, 3, Ok(59.9)), at(15), false));
        assert_eq!(jitter.last_evaluation.as_ref().and_then(|e| e.metrics[0].value), Some(59.9));
        assert!(!needs_write(&first, &jitter));
        // 60.6 % reads "61%".
        let moved = next_status(&first, &outcome(&p, &rec(3, 3, Ok(60.6)), at(30), false));
        assert!(needs_write(&first, &moved));
        // Nothing changes, but the stored evaluation says when the policy was last seen evaluated: refreshed
        // at five minutes, not before.
        let late = next_status(&first, &outcome(&p, &rec(3, 3, Ok(60.2)), at(299), false));
        assert!(!needs_write(&first, &late));
        let refresh = next_status(&first, &outcome(&p, &rec(3, 3, Ok(60.2)), at(300), false));
        assert!(needs_write(&first, &refresh));
    }

    #[test]
    fn external_changes_are_detected_against_the_last_known_replicas() {
        let ours = HistoryEntry {
            time: Time(at(0)),
            from: 2,
            to: 4,
            reason: "x".into(),
            policy: "target/cpu".into(),
            metrics: vec![],
        };
        let status = ScalingPolicyStatus { history: vec![ours.clone()], ..Default::default() };
        assert_eq!(detect_external(&status, 4, at(10)), None);
        let e = detect_external(&status, 7, at(10)).expect("external change");
        assert_eq!((e.from, e.to, e.policy.as_str()), (4, 7, EXTERNAL));
        assert_eq!(detect_external(&ScalingPolicyStatus::default(), 7, at(10)), None, "nothing to compare with");

        // Never scaled by Foresight: compared with what the last evaluation saw.
        let evaluation = |t: i64| Evaluation {
            time: Time(at(t)),
            metrics: vec![],
            proposals: vec![],
            prediction: None,
            decision: "Hold".into(),
            reason: "x".into(),
            limited_by: vec![],
        };
        let seen = ScalingPolicyStatus {
            current_replicas: Some(3),
            last_evaluation: Some(evaluation(30)),
            ..Default::default()
        };
        let e = detect_external(&seen, 6, at(45)).expect("a kubectl scale before Foresight ever scaled");
        assert_eq!((e.from, e.to), (3, 6));
        // An older scale of ours than the last evaluation: the evaluation's view is the newer one.
        let both = ScalingPolicyStatus { history: vec![ours], ..seen.clone() };
        assert_eq!(detect_external(&both, 3, at(45)), None);
        // A scale newer than the last evaluation (its status write was pending) is what we know.
        let mut pending = both.clone();
        pending.history[0].time = Time(at(40));
        assert_eq!(detect_external(&pending, 4, at(45)), None);
    }

    #[test]
    fn three_external_changes_in_ten_minutes_are_a_replica_fight() {
        let p = policy();
        let mut status = ScalingPolicyStatus::default();
        let mut fights = Vec::new();
        for (i, replicas) in [5u32, 3, 5, 3].iter().enumerate() {
            let now = at(i as i64 * 60);
            let external = if i == 0 { None } else { detect_external(&status, *replicas, now) };
            let r = rec(*replicas, *replicas, Ok(60.0));
            // The first evaluation scales (to have a value of ours to compare with).
            let mut o = outcome(&p, &r, now, false);
            o.external = external;
            if i == 0 {
                status.history.push(HistoryEntry {
                    time: Time(now),
                    from: 3,
                    to: 5,
                    reason: "x".into(),
                    policy: "target/cpu".into(),
                    metrics: vec![],
                });
            }
            let new = next_status(&status, &o);
            fights.push(notices(&status, &new, &o).iter().any(|n| n.reason == "ReplicaFight"));
            status = new;
        }
        assert_eq!(fights, [false, false, false, true]);
        assert!(conditions::is_true(&status.conditions, conditions::REPLICA_FIGHT));
        assert_eq!(status.history.iter().filter(|h| h.policy == EXTERNAL).count(), 3);
    }

    #[test]
    fn dry_run_reports_the_decision_without_history() {
        let p = policy();
        let r = rec(2, 4, Ok(95.0));
        let mut o = outcome(&p, &r, at(0), false);
        o.mode = Mode::DryRun;
        let old = ScalingPolicyStatus::default();
        let new = next_status(&old, &o);
        assert!(new.history.is_empty());
        assert_eq!((new.current_replicas, new.desired_replicas), (Some(2), Some(4)));
        let events = notices(&old, &new, &o);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "DryRunDecision");
        assert!(events[0].note.starts_with("Would scale from 2 to 4 (dry run)"), "{}", events[0].note);
        assert_eq!(
            conditions::find(&new.conditions, conditions::SCALING_ACTIVE).map(|c| c.reason.as_str()),
            Some("DryRun")
        );
    }

    #[test]
    fn standing_down_reports_who_acts_warns_once_and_never_claims_a_scale() {
        use super::super::conflicts::Verdict;
        let p = policy();
        let r = rec(2, 4, Ok(95.0));
        let why = "also targeted by ScalingPolicy team/web-a (older; it acts): only the oldest ScalingPolicy of a target scales it: this policy evaluates but does not";
        let verdict = Verdict {
            conflict: Some(("ConflictingScalingPolicy", why.into())),
            stand_down: true,
            blocker: Some("ScalingPolicy team/web-a acts".into()),
        };
        let mut o = outcome(&p, &r, at(0), false);
        o.mode = Mode::StandDown;
        o.conflict = verdict.clone();
        let old = ScalingPolicyStatus::default();
        let new = next_status(&old, &o);
        let find = |s: &ScalingPolicyStatus, t| conditions::find(&s.conditions, t).cloned().expect("condition");
        let conflict = find(&new, conditions::CONFLICT);
        assert_eq!(
            (conflict.status.as_str(), conflict.reason.as_str(), conflict.message.as_str()),
            ("True", "ConflictingScalingPolicy", why)
        );
        let ready = find(&new, conditions::READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "StandingDown"));
        assert!(ready.message.ends_with(&format!("; not scaling: {why}")), "{}", ready.message);
        assert_eq!(find(&new, conditions::SCALING_ACTIVE).reason, "StandingDown");
        assert_eq!(
            new.last_evaluation.as_ref().map(|e| e.reason.as_str()),
            Some("standing down (ScalingPolicy team/web-a acts): cpu 90% vs target 60%")
        );
        assert!(new.history.is_empty());
        let events = notices(&old, &new, &o);
        assert_eq!(events, [Notice::warning("ConflictingScalingPolicy", "DetectConflict", why.into())]);
        // The next evaluations say nothing new.
        let mut o2 = o.clone();
        o2.now = at(15);
        let again = next_status(&new, &o2);
        assert!(notices(&new, &again, &o2).is_empty());
        // Once alone, it acts again and the condition says the conflict is over, without a warning.
        let mut alone = outcome(&p, &r, at(30), true);
        alone.conflict = Verdict::default();
        let after = next_status(&again, &alone);
        assert_eq!(find(&after, conditions::CONFLICT).status, "False");
        assert_eq!(find(&after, conditions::READY).status, "True");
        assert!(notices(&again, &after, &alone).iter().all(|n| !n.warning));
        // A policy that never had a conflict gets no Conflict condition at all.
        assert!(conditions::find(&next_status(&old, &alone).conditions, conditions::CONFLICT).is_none());
    }

    #[test]
    fn missing_metrics_warn_once_per_transition() {
        let p = policy();
        let mut r = rec(3, 3, Err(Missing::QueryFailed("connection refused".into())));
        r.limited_by = vec![LimitedBy::MissingMetrics { metrics: vec!["cpu".into()] }];
        let old = ScalingPolicyStatus::default();
        let first = next_status(&old, &outcome(&p, &r, at(0), false));
        let events = notices(&old, &first, &outcome(&p, &r, at(0), false));
        assert!(
            events
                .iter()
                .any(|n| n.reason == "MetricsUnavailable" && n.warning && n.note.contains("connection refused"))
        );
        let second = next_status(&first, &outcome(&p, &r, at(15), false));
        assert!(notices(&first, &second, &outcome(&p, &r, at(15), false)).is_empty());
        assert_eq!(first.last_evaluation.as_ref().map(|e| e.metrics[0].state.as_str()), Some("QueryFailed"));
    }

    #[test]
    fn a_failed_reconcile_changes_only_ready() {
        let p = policy();
        let r = rec(2, 3, Ok(90.0));
        let good = next_status(&ScalingPolicyStatus::default(), &outcome(&p, &r, at(0), true));
        let failed = failed_status(&good, Some(2), at(30), "TargetNotFound", "Deployment web not found");
        assert_eq!(failed.history, good.history);
        assert_eq!(failed.observed_generation, Some(2));
        let ready = conditions::find(&failed.conditions, conditions::READY).expect("ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "TargetNotFound"));
    }
}
