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
    source::{
        AccessPolicy, Auth, CREDENTIALS_ADDRESS_KEY, CREDENTIALS_SECRET_TYPE, GroupedReader, MetricsSource,
        PrometheusConfig, grouped, is_dns1123_subdomain,
        promql::{self, Scope},
        same_address,
    },
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
    /// Settings the controller overrode (a timeout above --max-query-timeout), in words for the Ready condition.
    pub notes: Vec<String>,
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

    // A policy's Prometheus settings that the admin does not allow fail the whole reconcile (Ready=False with
    // the reason) before any Secret is read or any request is sent.
    let resolved = prometheus_config(&ctx.client, namespace, sp.spec.prometheus.as_ref(), ctx).await?;
    let notes = resolved.notes;
    let config = resolved.config;
    let source =
        ctx.sources.get(&config, namespace).map(|s| (s, config.timeout)).map_err(|e| Error::from(e).to_string());
    let (metrics, forecast) = match &source {
        Ok((source, timeout)) => {
            let tenancy = ctx.promql_tenancy;
            let metrics = match &ctx.grouped {
                Some(reader) => {
                    let scope = Scope::new(namespace, &sp.spec.target_ref).with_tenancy(tenancy);
                    read_metrics_grouped(reader, &config, source, sp, policy, scope, now).await
                }
                None => read_metrics(source.clone(), sp, policy, namespace, now, *timeout, tenancy).await,
            };
            let forecast = match &policy.predictive {
                Some(rule) => Some(forecast(ctx, source.clone(), sp, rule, namespace, now).await),
                None => None,
            };
            (metrics, forecast)
        }
        Err(why) => {
            let forecast = policy.predictive.as_ref().map(|_| Forecast::Abstain {
                reason: format!("no Prometheus: {why}"),
                samples: 0,
                periods: Vec::new(),
            });
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
        notes,
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
        return Forecast::Abstain {
            reason: format!("metric {:?} is not defined", rule.metric),
            samples: 0,
            periods: Vec::new(),
        };
    };
    let scope = Scope::new(namespace, &sp.spec.target_ref).with_tenancy(ctx.promql_tenancy);
    let query = match promql::query(metric, scope) {
        Ok(q) => q,
        Err(e) => return Forecast::Abstain { reason: e.to_string(), samples: 0, periods: Vec::new() },
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
            Err(e) => {
                return Forecast::Abstain {
                    reason: format!("history query failed: {e}"),
                    samples: 0,
                    periods: Vec::new(),
                };
            }
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
    tenancy: crate::source::promql::tenancy::Tenancy,
) -> BTreeMap<String, Series> {
    let scope = Scope::new(namespace, &sp.spec.target_ref).with_tenancy(tenancy);
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
    scope: Scope<'_>,
    now: Timestamp,
) -> BTreeMap<String, Series> {
    let namespace = scope.namespace;
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

/// A policy's Prometheus config, and what the controller overrode in it.
pub struct ResolvedPrometheus {
    pub config: PrometheusConfig,
    pub notes: Vec<String>,
}

/// The Prometheus to ask: the policy's own settings, if the admin allows them (see [`AccessPolicy`]), or the
/// controller's default Prometheus with its own credentials. Nothing is read or sent for a refused policy.
pub async fn prometheus_config(
    client: &Client,
    namespace: &str,
    spec: Option<&PrometheusSpec>,
    ctx: &Context,
) -> Result<ResolvedPrometheus, Error> {
    let access = &ctx.access;
    let mut notes = Vec::new();
    let Some(spec) = spec else {
        let address = ctx.default_prometheus.as_deref().ok_or(Error::NoPrometheus)?;
        let mut config = PrometheusConfig::new(address);
        config.timeout = access.clamp_timeout(ctx.query_timeout).0;
        config.auth = access.default_auth.clone();
        config.ca_pem = access.default_ca.clone();
        config.limits = access.limits;
        return Ok(ResolvedPrometheus { config, notes });
    };
    check_policy_prometheus(spec, access, ctx.default_prometheus.as_deref())?;
    let mut config = PrometheusConfig::new(spec.address.clone());
    config.limits = access.limits;
    let wanted = spec.timeout.map(|d| d.std()).unwrap_or(ctx.query_timeout);
    let (timeout, clamped) = access.clamp_timeout(wanted);
    if clamped {
        notes.push(format!(
            "spec.prometheus.timeout {} lowered to the controller's maximum {}",
            humantime::format_duration(wanted),
            humantime::format_duration(timeout)
        ));
    }
    config.timeout = timeout;
    config.headers = spec.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // The controller's own default credentials are never sent to a policy's address.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(auth) = &spec.auth {
        config.auth = match (&auth.bearer_token, &auth.basic) {
            (Some(token), _) => Some(Auth::Bearer(secret_value(&secrets, token, &spec.address).await?)),
            (None, Some(basic)) => Some(Auth::Basic {
                username: secret_value(&secrets, &basic.username, &spec.address).await?,
                password: secret_value(&secrets, &basic.password, &spec.address).await?,
            }),
            (None, None) => None,
        };
    }
    if let Some(ca) = &spec.ca {
        config.ca_pem = Some(secret_value(&secrets, ca, &spec.address).await?.into_bytes());
    }
    Ok(ResolvedPrometheus { config, notes })
}

/// Headers a policy may not set: they would change where or how the request goes, not what it asks.
const FORBIDDEN_HEADERS: &[&str] =
    &["host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade", "expect"];

/// The checks on a policy's `spec.prometheus` that need no API call: allowed address, credentials enabled,
/// Secret names that are object names, headers that only add information.
pub fn check_policy_prometheus(
    spec: &PrometheusSpec,
    access: &AccessPolicy,
    default: Option<&str>,
) -> Result<(), Error> {
    if !access.is_allowed(&spec.address, default) {
        return Err(Error::PrometheusNotAllowed { address: crate::source::address_for_humans(&spec.address) });
    }
    let refs: Vec<&SecretKeyRef> = spec
        .auth
        .iter()
        .flat_map(|a| a.bearer_token.iter().chain(a.basic.iter().flat_map(|b| [&b.username, &b.password])))
        .chain(spec.ca.iter())
        .collect();
    if !refs.is_empty() && !access.policy_credentials {
        return Err(Error::PolicyCredentialsDisabled);
    }
    if let Some(bad) = refs.iter().find(|r| !is_dns1123_subdomain(&r.name)) {
        return Err(Error::InvalidSecretName { name: crate::source::sanitise(&bad.name, 253) });
    }
    for (name, value) in &spec.headers {
        // The schema's rules again, for a policy stored without them: nothing malformed reaches a request.
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(is_token_byte) {
            return Err(Error::InvalidHeader {
                name: crate::source::sanitise(name, 64),
                problem: "its name is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~, at most 256)",
            });
        }
        if value.len() > MAX_HEADER_VALUE || !value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(Error::InvalidHeader {
                name: crate::source::sanitise(name, 64),
                problem: "its value holds a line break, a control or non-ASCII character, or is over 1024 characters",
            });
        }
        let lower = name.to_ascii_lowercase();
        if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(Error::ForbiddenHeader { name: crate::source::sanitise(name, 64) });
        }
    }
    Ok(())
}

/// The longest header name and value a policy may set (as the CRD's schema says).
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 1024;

/// An RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// One key of an opted-in credentials Secret, only if the Secret names `address` as where it may be sent.
async fn secret_value(api: &Api<Secret>, key: &SecretKeyRef, address: &str) -> Result<String, Error> {
    let secret = api.get(&key.name).await.map_err(|source| Error::GetSecret { name: key.name.clone(), source })?;
    if secret.type_.as_deref() != Some(CREDENTIALS_SECRET_TYPE) {
        return Err(Error::SecretNotOptedIn { name: key.name.clone() });
    }
    let value = |k: &str| -> Option<Vec<u8>> {
        let data = secret.data.as_ref().and_then(|d| d.get(k)).map(|b| b.0.clone());
        data.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(k)).map(|s| s.clone().into_bytes()))
    };
    let bound = value(CREDENTIALS_ADDRESS_KEY).and_then(|b| String::from_utf8(b).ok());
    if !bound.is_some_and(|bound| same_address(bound.trim(), address)) {
        return Err(Error::SecretBoundElsewhere { name: key.name.clone() });
    }
    let missing = || Error::SecretKey { name: key.name.clone(), key: key.key.clone() };
    String::from_utf8(value(&key.key).ok_or_else(missing)?).map_err(|_| missing())
}

/// A stable key for per-object state in the context.
pub fn object_key(sp: &ScalingPolicy) -> (String, String) {
    (sp.namespace().unwrap_or_default(), sp.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BasicAuth, PrometheusAuth};

    fn spec(address: &str) -> PrometheusSpec {
        PrometheusSpec { address: address.into(), timeout: None, auth: None, headers: BTreeMap::new(), ca: None }
    }

    fn key(name: &str) -> SecretKeyRef {
        SecretKeyRef { name: name.into(), key: "token".into() }
    }

    const DEFAULT: Option<&str> = Some("http://prometheus.monitoring:9090");

    #[test]
    fn policy_prometheus_settings_are_refused_before_anything_is_read_or_sent() {
        let allowing = AccessPolicy {
            allowed_addresses: vec!["http://thanos:9090".into()],
            policy_credentials: true,
            ..AccessPolicy::default()
        };
        let with_auth = |address: &str, name: &str| PrometheusSpec {
            auth: Some(PrometheusAuth { bearer_token: Some(key(name)), basic: None }),
            ..spec(address)
        };
        let with_header = |name: &str| PrometheusSpec {
            headers: [(name.to_owned(), "x".to_owned())].into_iter().collect(),
            ..spec("http://thanos:9090")
        };
        let with_value = |name: &str, value: &str| PrometheusSpec {
            headers: [(name.to_owned(), value.to_owned())].into_iter().collect(),
            ..spec("http://thanos:9090")
        };
        let cases: Vec<(PrometheusSpec, AccessPolicy, &str)> = vec![
            (spec("http://attacker/any/path"), allowing.clone(), "PrometheusAddressNotAllowed"),
            (spec("http://thanos:9090"), AccessPolicy::default(), "PrometheusAddressNotAllowed"),
            (with_auth("http://thanos:9090", "prom-token"), AccessPolicy::default(), "PrometheusAddressNotAllowed"),
            (
                with_auth("http://prometheus.monitoring:9090", "prom-token"),
                AccessPolicy::default(),
                "PolicyCredentialsDisabled",
            ),
            (with_auth("http://thanos:9090", "../../team-b/secrets/x"), allowing.clone(), "SecretNotAllowed"),
            (with_header("Host"), allowing.clone(), "PrometheusMisconfigured"),
            (with_header("proxy-authorization"), allowing.clone(), "PrometheusMisconfigured"),
            (with_header(" Host"), allowing.clone(), "PrometheusMisconfigured"),
            (with_header("X-Tenant\r\nHost: evil"), allowing.clone(), "PrometheusMisconfigured"),
            (with_header("X Tenant"), allowing.clone(), "PrometheusMisconfigured"),
            (with_header(&"x".repeat(257)), allowing.clone(), "PrometheusMisconfigured"),
            (with_value("X-Scope-OrgID", "team-a\r\nHost: evil"), allowing.clone(), "PrometheusMisconfigured"),
            (with_value("X-Scope-OrgID", "team\u{0}a"), allowing.clone(), "PrometheusMisconfigured"),
            (with_value("X-Scope-OrgID", "équipe"), allowing.clone(), "PrometheusMisconfigured"),
            (with_value("X-Scope-OrgID", &"a".repeat(1025)), allowing.clone(), "PrometheusMisconfigured"),
        ];
        for (spec, access, reason) in cases {
            let error = check_policy_prometheus(&spec, &access, DEFAULT).expect_err(reason);
            assert_eq!(error.reason(), reason, "{spec:?}: {error}");
        }
        let basic = PrometheusSpec {
            auth: Some(PrometheusAuth {
                bearer_token: None,
                basic: Some(BasicAuth { username: key("user"), password: key("Bad_Name") }),
            }),
            ..spec("http://thanos:9090")
        };
        let error = check_policy_prometheus(&basic, &allowing, DEFAULT).expect_err("bad name");
        assert!(matches!(error, Error::InvalidSecretName { .. }), "{error}");
        for ok in [spec("http://prometheus.monitoring:9090/"), with_auth("http://thanos:9090", "prom-token")] {
            assert!(check_policy_prometheus(&ok, &allowing, DEFAULT).is_ok(), "{ok:?}");
        }
    }
}
