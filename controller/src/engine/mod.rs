//! The decision engine: a pure function from a snapshot of the world to a recommendation with its reasons.
//!
//! ```text
//!  samples, history, now ──► readings ──► proposals (threshold, target, demand, predictive)
//!                                              │ any up: largest │ all down: largest │ else hold
//!                                              │ (a rule inside its tolerance band holds, but lets
//!                                              │  another rule scale down as far as its own count)
//!                                              ▼
//!                       stabilization ──► cooldown ──► rate limits ──► [min, max] ──► Recommendation
//! ```
//!
//! A demand rule in panic mode (`demand`) goes to what it asks for in one step: the scale-up rate limits do
//! not hold it back (its own maxScaleUpRate does), and it votes to hold, never down, while panicking.
//!
//! Nothing here touches kube, tokio or the network, and the clock is an input, so every rule is tested in
//! milliseconds and the backtest replays months of load through exactly the code the controller runs.

pub mod behavior;
pub mod demand;
pub mod format;
pub mod policy;
pub mod predictive;
pub mod readings;
pub mod recommendation;
pub mod snapshot;
pub mod target;
pub mod threshold;

#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;

pub use policy::Policy;
pub use recommendation::{Decision, Direction, LimitedBy, Missing, PolicyId, Proposal, Reading, Recommendation};
pub use snapshot::{Forecast, ForecastDetail, RecommendationRecord, Sample, ScaleEvent, Series, Snapshot};

/// The item with the largest `count`; of equal maxima the first, so that a winner follows spec order.
fn first_largest<T>(items: impl Iterator<Item = T>, count: impl Fn(&T) -> u32) -> Option<T> {
    items.fold(None, |best, item| match best {
        Some(b) if count(&b) >= count(&item) => Some(b),
        _ => Some(item),
    })
}

/// Decides the replicas for one evaluation. See the module documentation for the order of the steps.
pub fn recommend(policy: &Policy, snap: &Snapshot<'_>) -> Recommendation {
    let now = snap.now;
    let current = snap.current_replicas;

    let readings: Vec<Reading> = policy
        .metrics
        .iter()
        .map(|m| Reading {
            metric: m.name.clone(),
            value: readings::reading(m, snap.metrics.get(&m.name), now, policy.staleness),
        })
        .collect();
    let reading_of =
        |name: &str| readings.iter().find(|r| r.metric == name).map(|r| r.value.clone()).unwrap_or(Err(Missing::Empty));
    let last_down = snap.history.iter().filter(|e| e.to < e.from).map(|e| e.time).max();

    let mut proposals = Vec::new();
    for rule in &policy.thresholds {
        let Some(metric) = policy.metric(&rule.metric) else { continue };
        let samples = readings::samples(snap.metrics.get(&rule.metric));
        let evidence = threshold::Evidence { samples, now, last_down, ready: snap.ready_replicas };
        proposals.push(threshold::propose(rule, metric, &reading_of(&rule.metric), evidence, current));
    }
    for rule in &policy.targets {
        let Some(metric) = policy.metric(&rule.metric) else { continue };
        proposals.push(target::propose(rule, metric, &reading_of(&rule.metric), current, snap.ready_replicas));
    }
    let mut panicking: Vec<PolicyId> = Vec::new();
    for rule in &policy.demand {
        let Some(metric) = policy.metric(&rule.metric) else { continue };
        let samples = readings::samples(snap.metrics.get(&rule.metric));
        let evidence = demand::Evidence { samples, now, current, ready: snap.ready_replicas, history: snap.history };
        let outcome = demand::propose(rule, metric, &reading_of(&rule.metric), evidence);
        if outcome.panicking {
            panicking.push(outcome.proposal.policy.clone());
        }
        proposals.push(outcome.proposal);
    }
    if let Some(rule) = &policy.predictive
        && let Some(metric) = policy.metric(&rule.metric)
    {
        proposals.push(predictive::propose(rule, metric, snap.forecast));
    }

    // Zero traffic is not missing data: a window with no requests blocks nothing and counts as read.
    let missing: Vec<String> =
        readings.iter().filter(|r| r.value.as_ref().is_err_and(Missing::blocks)).map(|r| r.metric.clone()).collect();
    let any_usable = readings.iter().any(|r| r.value.as_ref().map_or_else(|m| !m.blocks(), |_| true));
    let consecutive_failures = if any_usable { 0 } else { snap.consecutive_failures.saturating_add(1) };

    let mut out = Recommendation {
        current,
        desired: current,
        decision: Decision::Hold,
        readings,
        proposals,
        winner: None,
        limited_by: Vec::new(),
        reason: String::new(),
        recommendations: snap.recommendations.to_vec(),
        consecutive_failures,
        fallback_active: false,
    };

    // Like the HPA: a target someone scaled to zero is left alone unless the policy allows zero.
    if current == 0 && policy.min_replicas > 0 {
        out.limited_by.push(LimitedBy::ScalingDisabled);
        out.reason = LimitedBy::ScalingDisabled.to_string();
        return out;
    }

    if !any_usable {
        decide_without_metrics(policy, &mut out, &missing);
        return out;
    }

    // Any up: the largest proposal. All down: the largest proposal. Otherwise hold. A rule holding inside its
    // tolerance band (a `floor`) starts no change but votes its floor when another rule asks to scale down.
    let votes: Vec<(&PolicyId, u32, &str)> = out
        .proposals
        .iter()
        .filter(|p| !p.shadow)
        .filter_map(|p| p.replicas.map(|r| (&p.policy, r, p.reason.as_str())))
        .collect();
    let down_votes: Vec<(&PolicyId, u32)> = out
        .proposals
        .iter()
        .filter(|p| !p.shadow)
        .filter_map(|p| p.replicas.map(|r| (&p.policy, p.floor.unwrap_or(r))))
        .collect();
    let starts_down =
        out.proposals.iter().any(|p| !p.shadow && p.floor.is_none() && p.replicas.is_some_and(|r| r < current));
    let top = first_largest(votes.iter(), |v| v.1);
    let mut asked = Decision::Hold;
    let mut raw = current;
    let mut winner = None;
    let mut asked_reason = String::new();
    if let Some(&(id, replicas, reason)) = top {
        if replicas > current {
            asked = Decision::ScaleUp;
            raw = replicas;
            winner = Some(id.clone());
            asked_reason = reason.to_string();
        } else if starts_down && down_votes.iter().all(|v| v.1 < current) {
            let vetoed = policy.metrics.iter().find_map(|m| {
                let bound = m.veto_above?;
                let v = out.readings.iter().find(|r| r.metric == m.name)?.value.as_ref().ok().copied()?;
                (v > bound).then_some((m, v, bound))
            });
            asked_reason = votes.iter().map(|v| v.2).collect::<Vec<_>>().join("; ");
            if !missing.is_empty() {
                out.limited_by.push(LimitedBy::MissingMetrics { metrics: missing.clone() });
            } else if let Some((m, v, bound)) = vetoed {
                out.limited_by.push(LimitedBy::Vetoed {
                    metric: m.name.clone(),
                    value: format::value(m.kind, v),
                    bound: format::value(m.kind, bound),
                });
            } else {
                // The largest down vote.
                let (id, replicas) = first_largest(down_votes.iter().copied(), |v| v.1).unwrap_or((id, replicas));
                asked = Decision::ScaleDown;
                raw = replicas;
                winner = Some(id.clone());
            }
        }
    }

    // Stabilization over this and past recommendations.
    let keep = policy.up.stabilization.max(policy.down.stabilization);
    out.recommendations = behavior::record(snap.recommendations, now, raw, keep);
    let mut desired = behavior::stabilize(
        current,
        raw,
        &out.recommendations,
        now,
        policy.up.stabilization,
        policy.down.stabilization,
    );
    if desired != raw {
        let (direction, window) = if raw > current {
            (Direction::Up, policy.up.stabilization)
        } else {
            (Direction::Down, policy.down.stabilization)
        };
        let until = behavior::stabilized_until(&out.recommendations, now, window, desired);
        out.limited_by.push(LimitedBy::Stabilized { direction, window, held: desired, until });
    }

    // Cooldowns after the last change of replicas.
    for (direction, rules, wants) in
        [(Direction::Up, &policy.up, desired > current), (Direction::Down, &policy.down, desired < current)]
    {
        if wants
            && let Some(until) = behavior::cooldown_until(snap.history, rules.cooldown)
            && now < until
        {
            desired = current;
            out.limited_by.push(LimitedBy::Cooldown { direction, until });
        }
    }

    // Rate limits, and the [min, max] range within them (HPA's convertDesiredReplicasWithBehaviorRate).
    if desired > current {
        // A panicking demand rule that asked for this scale-up is bounded by its own maxScaleUpRate only.
        let panic_up = policy.up.select != policy::Select::Disabled
            && winner.as_ref().is_some_and(|w| panicking.contains(w))
            && desired == raw;
        let limit = if panic_up { u32::MAX } else { behavior::scale_up_limit(current, snap.history, now, &policy.up) };
        let max_allowed = limit.min(policy.max_replicas);
        if desired > max_allowed {
            desired = max_allowed;
            out.limited_by.push(if policy.up.select == policy::Select::Disabled {
                LimitedBy::Disabled { direction: Direction::Up }
            } else if limit < policy.max_replicas {
                LimitedBy::RateLimit { direction: Direction::Up, limit }
            } else {
                LimitedBy::MaxReplicas
            });
        }
    } else if desired < current {
        let limit = behavior::scale_down_limit(current, snap.history, now, &policy.down);
        let min_allowed = limit.max(policy.min_replicas);
        if desired < min_allowed {
            desired = min_allowed;
            out.limited_by.push(if policy.down.select == policy::Select::Disabled {
                LimitedBy::Disabled { direction: Direction::Down }
            } else if limit > policy.min_replicas {
                LimitedBy::RateLimit { direction: Direction::Down, limit }
            } else {
                LimitedBy::MinReplicas
            });
        }
    }
    clamp_to_range(policy, &mut desired, &mut out.limited_by);

    out.desired = desired;
    out.decision = decision(current, desired);
    out.winner = if out.decision == asked { winner } else { None };
    out.reason = explain(&out, asked, &asked_reason);
    out
}

/// No metric could be read: hold (never scale down on missing data), or apply the fallback floor once the
/// failures reach its threshold.
fn decide_without_metrics(policy: &Policy, out: &mut Recommendation, missing: &[String]) {
    let current = out.current;
    let mut desired = current;
    out.limited_by.push(LimitedBy::MissingMetrics { metrics: missing.to_vec() });
    let mut reason = format!("no metric could be read ({})", missing.join(", "));
    if out.consecutive_failures >= policy.fallback.failure_threshold
        && let Some(floor) = policy.fallback.replicas
    {
        out.fallback_active = true;
        if floor > current {
            desired = floor;
            out.winner = Some(PolicyId::Fallback);
        }
        reason = format!(
            "no metric for {} evaluations; fallback to at least {}",
            out.consecutive_failures,
            format::replicas(floor)
        );
    }
    clamp_to_range(policy, &mut desired, &mut out.limited_by);
    // Say what was done: holding, or moved into [minReplicas, maxReplicas] (never "holding 6" next to 6 -> 8).
    reason = match out.limited_by.last() {
        Some(LimitedBy::MinReplicas) => format!("{reason}; raised to minReplicas {desired}"),
        Some(LimitedBy::MaxReplicas) => format!("{reason}; lowered to maxReplicas {desired}"),
        _ if desired == current && !out.fallback_active => format!("{reason}; holding {}", format::replicas(current)),
        _ => reason,
    };
    out.desired = desired;
    out.decision = decision(current, desired);
    out.reason = reason;
}

fn clamp_to_range(policy: &Policy, desired: &mut u32, limited_by: &mut Vec<LimitedBy>) {
    if *desired > policy.max_replicas {
        *desired = policy.max_replicas;
        limited_by.push(LimitedBy::MaxReplicas);
    }
    if *desired < policy.min_replicas {
        *desired = policy.min_replicas;
        limited_by.push(LimitedBy::MinReplicas);
    }
}

fn decision(current: u32, desired: u32) -> Decision {
    match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Decision::ScaleUp,
        std::cmp::Ordering::Less => Decision::ScaleDown,
        std::cmp::Ordering::Equal => Decision::Hold,
    }
}

/// The decision in one sentence: what was asked, and what limited it.
fn explain(out: &Recommendation, asked: Decision, asked_reason: &str) -> String {
    let mut limits = out.limited_by.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    if let Some(t) = out.earliest_change() {
        limits.push_str(&format!("; next change at {t} at the earliest"));
    }
    let base = match asked {
        Decision::ScaleUp | Decision::ScaleDown => asked_reason.to_string(),
        Decision::Hold if asked_reason.is_empty() => {
            let why: Vec<&str> = out.proposals.iter().filter(|p| !p.shadow).map(|p| p.reason.as_str()).collect();
            if why.is_empty() { "no policy has an opinion".to_string() } else { why.join("; ") }
        }
        Decision::Hold => asked_reason.to_string(),
    };
    if limits.is_empty() { base } else { format!("{base} ({limits})") }
}
