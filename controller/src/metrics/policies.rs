//! Every policy's series in `/metrics`: one small record per policy, written out at each scrape.
//!
//! A `Family` per kind of series would keep, for each series of each policy, a map entry with its own copies of
//! the namespace, the name and the metric, and an `Arc` per gauge; at 10,000 policies that was 26 MB of the
//! controller's heap, in a few hundred thousand allocations. A record holds the values and each metric's name
//! once. It is updated in place at each evaluation (nothing is allocated unless a metric appears), mirrors the
//! policy as evaluated (a bound removed from the spec disappears), and goes with the policy.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, RwLock};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::engine::{Forecast, Policy, Recommendation};

/// At most this many periods per forecast: a day, a week and `forecast` short-period profiles.
pub(super) const MAX_PERIODS: usize = 5;

/// The `rank` label of the period series: 1 for the shortest period the forecast models.
const RANKS: [&str; MAX_PERIODS] = ["1", "2", "3", "4", "5"];

/// The `bound` label of the threshold series, in the order of [`MetricSeries::bounds`].
const BOUNDS: [&str; 3] = ["scale_up", "scale_down", "target"];

/// The records by namespace, then name. A scrape locks one namespace at a time, so an evaluation waits at most
/// for its own namespace's lines of one family to be written.
#[derive(Debug, Default)]
pub(super) struct PolicySeries {
    namespaces: RwLock<HashMap<Box<str>, Namespace>>,
}

/// One namespace's records, by policy name.
type Namespace = Mutex<HashMap<Box<str>, Record>>;

#[derive(Debug, Default)]
struct Record {
    /// Current and desired replicas, once evaluated.
    replicas: Option<(u32, u32)>,
    metrics: Vec<MetricSeries>,
    forecast: Option<ForecastSeries>,
    scale_ups: u64,
    scale_downs: u64,
}

#[derive(Debug)]
struct MetricSeries {
    name: Box<str>,
    /// The latest value; absent while missing.
    value: Option<f64>,
    /// Scale-up and scale-down thresholds and the target, as the policy has them.
    bounds: [Option<f64>; 3],
}

#[derive(Debug, Clone, Copy)]
struct ForecastSeries {
    peak: f64,
    error: f64,
    margin: f64,
    periods: [f64; MAX_PERIODS],
    period_count: usize,
}

impl Record {
    fn evaluated(&mut self, policy: &Policy, rec: &Recommendation, forecast: Option<&Forecast>) {
        self.replicas = Some((rec.current, rec.desired));
        for m in &mut self.metrics {
            m.value = None;
            m.bounds = [None; 3];
        }
        for reading in &rec.readings {
            self.metric(&reading.metric).value = reading.value.as_ref().ok().copied();
        }
        for t in &policy.thresholds {
            let m = self.metric(&t.metric);
            m.bounds[0] = t.up.as_ref().map(|b| b.value);
            m.bounds[1] = t.down.as_ref().map(|b| b.value);
        }
        for t in &policy.targets {
            self.metric(&t.metric).bounds[2] = Some(t.target);
        }
        self.metrics.retain(|m| m.value.is_some() || m.bounds.iter().any(Option::is_some));
        self.forecast = match forecast {
            Some(Forecast::Ready { peak, error, detail, .. }) => {
                let mut periods = [0.0; MAX_PERIODS];
                let period_count = detail.periods.len().min(MAX_PERIODS);
                periods[..period_count].copy_from_slice(&detail.periods[..period_count]);
                Some(ForecastSeries { peak: *peak, error: *error, margin: detail.margin, periods, period_count })
            }
            _ => None,
        };
    }

    fn metric(&mut self, name: &str) -> &mut MetricSeries {
        let index = match self.metrics.iter().position(|m| &*m.name == name) {
            Some(index) => index,
            None => {
                self.metrics.push(MetricSeries { name: name.into(), value: None, bounds: [None; 3] });
                self.metrics.len() - 1
            }
        };
        &mut self.metrics[index]
    }
}

impl PolicySeries {
    /// Runs `update` on the record of `namespace/name`, creating it if needed (allocating only then).
    fn update(&self, namespace: &str, name: &str, update: impl FnOnce(&mut Record)) {
        {
            let namespaces = self.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(policies) = namespaces.get(namespace) {
                let mut policies = policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(record) = policies.get_mut(name) {
                    return update(record);
                }
                let mut record = Record::default();
                update(&mut record);
                policies.insert(name.into(), record);
                return;
            }
        }
        let mut record = Record::default();
        update(&mut record);
        let mut namespaces = self.namespaces.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let policies = namespaces.entry(namespace.into()).or_default();
        policies.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.into(), record);
    }

    pub(super) fn evaluated(
        &self,
        namespace: &str,
        name: &str,
        policy: &Policy,
        rec: &Recommendation,
        forecast: Option<&Forecast>,
    ) {
        self.update(namespace, name, |r| r.evaluated(policy, rec, forecast));
    }

    pub(super) fn scaled(&self, namespace: &str, name: &str, up: bool) {
        self.update(namespace, name, |r| if up { r.scale_ups += 1 } else { r.scale_downs += 1 });
    }

    pub(super) fn forgotten(&self, namespace: &str, name: &str) {
        let mut namespaces = self.namespaces.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(policies) = namespaces.get_mut(namespace) else { return };
        let policies = policies.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        policies.remove(name);
        if policies.is_empty() {
            namespaces.remove(namespace);
        }
    }

    /// Writes one family: its descriptor, if any record has a series of it, then every record's series.
    fn family(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        metric_type: MetricType,
        has: impl Fn(&Record) -> bool,
        write: impl Fn(&mut MetricEncoder, [(&str, &str); 2], &Record) -> fmt::Result,
    ) -> fmt::Result {
        let namespaces = self.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A panic while a record was updated leaves values that are still numbers: keep serving them.
        let lock = |p: &Namespace| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().any(&has);
        if !namespaces.values().any(lock) {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
        for (namespace, policies) in namespaces.iter() {
            let policies = policies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (policy, record) in policies.iter().filter(|(_, r)| has(r)) {
                write(&mut family, [("namespace", namespace), ("policy", policy)], record)?;
            }
        }
        Ok(())
    }
}

fn gauge<const N: usize>(
    family: &mut MetricEncoder,
    labels: [(&str, &str); N],
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(value).encode(family.encode_family(&labels)?)
}

impl Collector for PolicySeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let forecast = |r: &Record| r.forecast.is_some();
        self.family(
            &mut encoder,
            "scale_actions",
            "Changes of a target's replicas made by Foresight",
            MetricType::Counter,
            |r| r.scale_ups + r.scale_downs > 0,
            |f, [ns, policy], r| {
                for (direction, count) in [("up", r.scale_ups), ("down", r.scale_downs)] {
                    if count > 0 {
                        let labels = [ns, policy, ("direction", direction)];
                        ConstCounter::new(count).encode(f.encode_family(&labels)?)?;
                    }
                }
                Ok(())
            },
        )?;
        type Replicas = fn((u32, u32)) -> u32;
        let replicas: [(&str, &str, Replicas); 2] = [
            ("policy_current_replicas", "The target's replicas at the last evaluation", |(current, _)| current),
            ("policy_desired_replicas", "The replicas Foresight wants", |(_, desired)| desired),
        ];
        for (name, help, pick) in replicas {
            self.family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                |r| r.replicas.is_some(),
                |f, labels, r| r.replicas.map_or(Ok(()), |both| gauge(f, labels, pick(both))),
            )?;
        }
        self.family(
            &mut encoder,
            "policy_metric_value",
            "A policy metric's latest value (absent while missing)",
            MetricType::Gauge,
            |r| r.metrics.iter().any(|m| m.value.is_some()),
            |f, [ns, policy], r| {
                for m in &r.metrics {
                    if let Some(value) = m.value {
                        gauge(f, [ns, policy, ("metric", &m.name)], value)?;
                    }
                }
                Ok(())
            },
        )?;
        self.family(
            &mut encoder,
            "policy_metric_threshold",
            "A policy's bounds: scale_up, scale_down (threshold) and target",
            MetricType::Gauge,
            |r| r.metrics.iter().any(|m| m.bounds.iter().any(Option::is_some)),
            |f, [ns, policy], r| {
                for m in &r.metrics {
                    for (bound, value) in BOUNDS.iter().zip(m.bounds) {
                        if let Some(value) = value {
                            gauge(f, [ns, policy, ("metric", &m.name), ("bound", bound)], value)?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        type Value = fn(&ForecastSeries) -> f64;
        let forecasts: [(&str, &str, Value); 3] = [
            ("policy_forecast", "The predictive policy's peak forecast within its look-ahead", |f| f.peak),
            ("policy_forecast_error", "The forecast's error on held-out history (fraction)", |f| f.error),
            (
                "policy_forecast_margin",
                "The calibrated headroom included in the peak forecast (the coverage quantile of its out-of-sample errors)",
                |f| f.margin,
            ),
        ];
        for (name, help, value) in forecasts {
            self.family(&mut encoder, name, help, MetricType::Gauge, forecast, |f, labels, r| {
                r.forecast.as_ref().map_or(Ok(()), |forecast| gauge(f, labels, value(forecast)))
            })?;
        }
        self.family(
            &mut encoder,
            "policy_forecast_period_seconds",
            "A period the forecast models (rank 1 is the shortest), seconds",
            MetricType::Gauge,
            |r| r.forecast.is_some_and(|f| f.period_count > 0),
            |f, [ns, policy], r| {
                let Some(forecast) = &r.forecast else { return Ok(()) };
                for (rank, period) in RANKS.iter().zip(&forecast.periods[..forecast.period_count]) {
                    gauge(f, [ns, policy, ("rank", rank)], *period)?;
                }
                Ok(())
            },
        )
    }
}
