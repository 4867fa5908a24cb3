//! Gather: everything the engine decides from, read from the world.
//!
//! The target's replicas come from its `/scale`; metrics from one range query per metric over the policy's
//! lookback (ending now, one point per interval), or, with `--grouped-queries`, from the shared
//! [`GroupedReader`] (one grouped query per namespace, template and interval, see `source::grouped`); history, stabilization records and the failure count from the
//! policy's own status. A failed or slow query never fails the reconcile: it becomes `Series::Failed`, which
//! the engine treats as missing (hold, never scale down, fallback after the threshold).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, api::DynamicObject};

use super::{
    Context,
    error::Error,
    report,
    target::{self, TargetScale},
};
use crate::{
    api::{HistoryEntry, PrometheusSpec, ScalingPolicy, ScalingPolicyStatus, SecretKeyRef},
    engine::{
        self, Forecast, Policy, RecommendationRecord, ScaleEvent, Series, Snapshot,
        behavior::{after, before},
        policy::PredictiveRule,
    },
    promql::{self, Scope},
    source::{Auth, GroupedReader, MetricsSource, PrometheusConfig, grouped},
};

/// What one evaluation saw.
pub struct Observation {
    pub now: Timestamp,
    /// The target's /scale, through which it is read and patched.
    pub api: Api<DynamicObject>,
    pub scale: TargetScale,
    pub metrics: BTreeMap<String, Series>,
    pub forecast: Option<Forecast>,
    /// A change of replicas made by someone else since the last evaluation.
    pub external: Option<HistoryEntry>,
    /// Foresight's own scale announced in `status.pendingScale` by an earlier reconcile that stopped before it
    /// recorded it, now found done and recorded (see [`report::settle_pending`]).
    pub settled: Option<HistoryEntry>,
    /// Status history (plus `external`) as engine events, newest first.
    pub history: Vec<ScaleEvent>,
    pub recommendations: Vec<RecommendationRecord>,
    pub consecutive_failures: u32,
}

impl Observation {
    /// The engine's view of this observation.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            now: self.now,
            current_replicas: self.scale.replicas,
            ready_replicas: None,
            metrics: &self.metrics,
            history: &self.history,
            recommendations: &self.recommendations,
            consecutive_failures: self.consecutive_failures,
            forecast: self.forecast.as_ref(),
        }
    }
}

/// Reads the target's /scale and the policy's metrics at `now`. A scale left pending in `old` is settled
/// against the target's replicas first (moved into `old.history` when it happened).
pub async fn observe(
    sp: &ScalingPolicy,
    policy: &Policy,
    old: &mut ScalingPolicyStatus,
    ctx: &Context,
    namespace: &str,
    now: Timestamp,
) -> Result<Observation, Error> {
    let target_ref = &sp.spec.target_ref;
    let resource = ctx.resolver.resolve(&ctx.client, target_ref).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let scale = target::read_scale(&api, target_ref).await?;
    let settled = report::settle_pending(old, scale.replicas);
    let old: &ScalingPolicyStatus = old;

    let source = match prometheus_config(&ctx.client, namespace, sp.spec.prometheus.as_ref(), ctx).await {
        Ok(config) => ctx.sources.get(&config).map(|s| (s, config)).map_err(|e| Error::from(e).to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (metrics, forecast) = match &source {
        Ok((source, config)) => {
            let metrics = match &ctx.grouped {
                Some(reader) => read_metrics_grouped(reader, config, source, sp, policy, namespace, now).await,
                None => read_metrics(source.clone(), sp, policy, namespace, now, config.timeout).await,
            };
            let forecast = match &policy.predictive {
                Some(rule) => Some(forecast(ctx, source.clone(), sp, rule, namespace, now).await),
                None => None,
            };
            (metrics, forecast)
        }
        Err(why) => {
            let forecast = policy
                .predictive
                .as_ref()
                .map(|_| Forecast::Abstain { reason: format!("no Prometheus: {why}"), samples: 0 });
            (all_failed(sp, why), forecast)
        }
    };

    let external = report::detect_external(old, scale.replicas, now);
    let mut history = Vec::with_capacity(old.history.len() + 1);
    if let Some(e) = &external {
        history.extend(report::scale_events(std::slice::from_ref(e)));
    }
    history.extend(report::scale_events(&old.history));

    Ok(Observation {
        now,
        api,
        scale,
        metrics,
        forecast,
        external,
        settled,
        history,
        recommendations: report::recommendation_records(old),
        consecutive_failures: old.consecutive_metric_failures.max(0) as u32,
    })
}

/// Prometheus answers at most 11,000 points per series and range query; longer histories are read in chunks.
const MAX_POINTS_PER_QUERY: u64 = 10_000;

/// The predictive rule's forecast at `now`. The week of history behind it is read only when the cached model is
/// due for a refit (at most once per `rule.step`); a failed read makes the forecast abstain, never fail the
/// evaluation.
async fn forecast(
    ctx: &Context,
    source: Arc<dyn MetricsSource>,
    sp: &ScalingPolicy,
    rule: &PredictiveRule,
    namespace: &str,
    now: Timestamp,
) -> Forecast {
    let key = object_key(sp);
    if !ctx.forecast_due(&key, rule, now) {
        return ctx.forecast(&key, rule, &[], now);
    }
    let Some(metric) = sp.spec.metrics.iter().find(|m| m.name == rule.metric) else {
        return Forecast::Abstain { reason: format!("metric {:?} is not defined", rule.metric), samples: 0 };
    };
    let query = match promql::query(metric, Scope::new(namespace, &sp.spec.target_ref)) {
        Ok(q) => q,
        Err(e) => return Forecast::Abstain { reason: e.to_string(), samples: 0 },
    };
    let step = rule.step.max(Duration::from_secs(1));
    let chunk = step * MAX_POINTS_PER_QUERY as u32;
    let mut history = Vec::new();
    let mut start = before(now, rule.history);
    while start < now {
        let end = after(start, chunk).min(now);
        match source.range(&query, start, end, step).await {
            Ok(samples) => {
                // Chunks share their boundary point: keep time strictly increasing.
                for s in samples {
                    if history.last().is_none_or(|l: &engine::Sample| s.time > l.time) {
                        history.push(s);
                    }
                }
            }
            Err(e) => return Forecast::Abstain { reason: format!("history query failed: {e}"), samples: 0 },
        }
        start = end;
    }
    ctx.forecast(&key, rule, &history, now)
}

/// Every metric failed for the same reason (no usable Prometheus config).
fn all_failed(sp: &ScalingPolicy, why: &str) -> BTreeMap<String, Series> {
    sp.spec.metrics.iter().map(|m| (m.name.clone(), Series::Failed(why.to_string()))).collect()
}

/// One range query per metric, all at once, each bounded by the query timeout.
async fn read_metrics(
    source: Arc<dyn MetricsSource>,
    sp: &ScalingPolicy,
    policy: &Policy,
    namespace: &str,
    now: Timestamp,
    timeout: Duration,
) -> BTreeMap<String, Series> {
    let scope = Scope::new(namespace, &sp.spec.target_ref);
    let lookback = jiff::SignedDuration::try_from(policy.lookback()).unwrap_or(jiff::SignedDuration::from_mins(5));
    let start = now.checked_sub(lookback).unwrap_or(now);
    let step = policy.interval;
    let queries = sp.spec.metrics.iter().map(|m| {
        let source = source.clone();
        async move {
            let query = match promql::query(m, scope) {
                Ok(q) => q,
                Err(e) => return (m.name.clone(), Series::Failed(e.to_string())),
            };
            // The source has its own timeout; this one only guards against a source that ignores it.
            let answer =
                tokio::time::timeout(timeout + Duration::from_secs(1), source.range(&query, start, now, step)).await;
            let series = match answer {
                Ok(Ok(samples)) => Series::Samples(samples),
                Ok(Err(e)) => Series::Failed(e.to_string()),
                Err(_) => Series::Failed(format!("no answer within {}", humantime::format_duration(timeout))),
            };
            tracing::debug!(metric = %m.name, %query, ok = matches!(series, Series::Samples(_)), "metric read");
            (m.name.clone(), series)
        }
    });
    join_all(queries).await.into_iter().collect()
}

/// Every metric through the shared [`GroupedReader`]: built-in templates from the namespace's grouped queries,
/// raw queries and overrides from their own, each sent at most once per interval by all the policies that ask.
/// The range ends at the interval-aligned time (at most one interval ago), so that policies reconciled at
/// different moments of the interval share it.
async fn read_metrics_grouped(
    reader: &GroupedReader,
    config: &PrometheusConfig,
    source: &Arc<dyn MetricsSource>,
    sp: &ScalingPolicy,
    policy: &Policy,
    namespace: &str,
    now: Timestamp,
) -> BTreeMap<String, Series> {
    let scope = Scope::new(namespace, &sp.spec.target_ref);
    let step = policy.interval;
    let end = grouped::aligned(now, step);
    let lookback = jiff::SignedDuration::try_from(policy.lookback()).unwrap_or(jiff::SignedDuration::from_mins(5));
    let start = end.checked_sub(lookback).unwrap_or(end);
    let timeout = config.timeout;
    let reads = sp.spec.metrics.iter().map(|m| async move {
        let plan = match promql::plan(m, scope) {
            Ok(plan) => plan,
            Err(e) => return (m.name.clone(), Series::Failed(e.to_string())),
        };
        let read = reader.read(config, source, namespace, &plan, start, end, step, now);
        // The source has its own timeout; this one only guards against a source that ignores it.
        let series = match tokio::time::timeout(timeout + Duration::from_secs(1), read).await {
            Ok(Ok(samples)) => Series::Samples(samples),
            Ok(Err(e)) => Series::Failed(e.to_string()),
            Err(_) => Series::Failed(format!("no answer within {}", humantime::format_duration(timeout))),
        };
        tracing::debug!(metric = %m.name, ok = matches!(series, Series::Samples(_)), "metric read (grouped)");
        (m.name.clone(), series)
    });
    join_all(reads).await.into_iter().collect()
}

/// The Prometheus to ask: the policy's own settings (credentials from Secrets in its namespace) or the
/// controller's default address.
pub async fn prometheus_config(
    client: &Client,
    namespace: &str,
    spec: Option<&PrometheusSpec>,
    ctx: &Context,
) -> Result<PrometheusConfig, Error> {
    let Some(spec) = spec else {
        let address = ctx.default_prometheus.as_deref().ok_or(Error::NoPrometheus)?;
        let mut config = PrometheusConfig::new(address);
        config.timeout = ctx.query_timeout;
        return Ok(config);
    };
    let mut config = PrometheusConfig::new(spec.address.clone());
    config.timeout = spec.timeout.map(|d| d.std()).unwrap_or(ctx.query_timeout);
    config.headers = spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(auth) = &spec.auth {
        config.auth = match (&auth.bearer_token, &auth.basic) {
            (Some(token), _) => Some(Auth::Bearer(secret_value(&secrets, token).await?)),
            (None, Some(basic)) => Some(Auth::Basic {
                username: secret_value(&secrets, &basic.username).await?,
                password: secret_value(&secrets, &basic.password).await?,
            }),
            (None, None) => None,
        };
    }
    if let Some(ca) = &spec.ca {
        config.ca_pem = Some(secret_value(&secrets, ca).await?.into_bytes());
    }
    Ok(config)
}

async fn secret_value(api: &Api<Secret>, key: &SecretKeyRef) -> Result<String, Error> {
    let secret = api.get(&key.name).await.map_err(|source| Error::GetSecret { name: key.name.clone(), source })?;
    let missing = || Error::SecretKey { name: key.name.clone(), key: key.key.clone() };
    let bytes = secret.data.as_ref().and_then(|d| d.get(&key.key)).map(|b| b.0.clone());
    let bytes = match bytes {
        Some(b) => b,
        None => secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(&key.key))
            .map(|s| s.clone().into_bytes())
            .ok_or_else(missing)?,
    };
    String::from_utf8(bytes).map_err(|_| missing())
}

/// A stable key for per-object state in the context.
pub fn object_key(sp: &ScalingPolicy) -> (String, String) {
    (sp.namespace().unwrap_or_default(), sp.name_any())
}
