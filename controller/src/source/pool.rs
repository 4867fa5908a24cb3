//! One client per distinct Prometheus config and namespace, one shared circuit breaker per Prometheus address,
//! and one breaker per address and namespace.
//!
//! Hundreds of policies usually point at one or two Prometheus servers. Sharing a breaker per address means that
//! once Prometheus is unreachable, every policy fails fast, not only the ones that happened to see the failures;
//! that breaker counts transport failures only. Timeouts and server errors, which one namespace's expensive
//! queries can provoke, count towards that namespace's own breaker, so one tenant cannot cut the others off.
//! Configs that differ only in credentials or headers get their own client but still share the address's breaker.
//! The namespaces using one config share its HTTP client (connection pool, TLS roots: about a megabyte each);
//! only their breakers are their own.

use super::breaker::{BreakerConfig, BreakerSource, CircuitBreaker, CircuitState, Clock, system_clock};
use super::prometheus::{ConfigError, PrometheusConfig, PrometheusSource};
use super::{MetricsSource, QueryObserver};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Entries {
    sources: HashMap<(PrometheusConfig, String), Arc<BreakerSource>>,
    clients: HashMap<PrometheusConfig, Arc<PrometheusSource>>,
    circuits: HashMap<String, Arc<CircuitBreaker>>,
    tenants: HashMap<(String, String), Arc<CircuitBreaker>>,
}

/// Thread-safe cache of Prometheus sources, each behind its address's circuit breaker.
pub struct SourcePool {
    breaker: BreakerConfig,
    observer: Arc<dyn QueryObserver>,
    clock: Clock,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for SourcePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcePool")
            .field("breaker", &self.breaker)
            .field("circuits", &self.circuit_states())
            .finish_non_exhaustive()
    }
}

impl SourcePool {
    pub fn new(breaker: BreakerConfig, observer: Arc<dyn QueryObserver>) -> Self {
        Self::with_clock(breaker, observer, system_clock())
    }

    pub fn with_clock(breaker: BreakerConfig, observer: Arc<dyn QueryObserver>, clock: Clock) -> Self {
        Self { breaker, observer, clock, entries: Mutex::new(Entries::default()) }
    }

    /// The source for `config` as used by policies of `namespace`, built on first use (which validates the
    /// config) and shared afterwards.
    pub fn get_or_create(
        &self,
        config: &PrometheusConfig,
        namespace: &str,
    ) -> Result<Arc<dyn MetricsSource>, ConfigError> {
        let mut entries = self.lock();
        let key = (config.clone(), namespace.to_owned());
        if let Some(source) = entries.sources.get(&key) {
            return Ok(source.clone());
        }
        let prometheus = match entries.clients.get(config) {
            Some(client) => client.clone(),
            None => {
                let client = Arc::new(PrometheusSource::new(config)?);
                entries.clients.insert(config.clone(), client.clone());
                client
            }
        };
        let label = address_label(&config.address);
        let circuit = entries
            .circuits
            .entry(label.clone())
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::new(label.clone(), self.breaker, self.clock.clone(), self.observer.clone()))
            })
            .clone();
        // A namespace's own breaker is not exported as a metric (its label would grow with the namespaces); its
        // state reaches the policy's status through the CircuitOpen error.
        let tenant = entries
            .tenants
            .entry((label.clone(), namespace.to_owned()))
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::new(label, self.breaker, self.clock.clone(), Arc::new(super::NoopObserver)))
            })
            .clone();
        let source = Arc::new(BreakerSource::new(prometheus, circuit).with_tenant(tenant));
        entries.sources.insert(key, source.clone());
        Ok(source)
    }

    /// Each address's circuit state, for a metrics scrape or a status page. Addresses have credentials removed.
    pub fn circuit_states(&self) -> Vec<(String, CircuitState)> {
        let mut states: Vec<_> =
            self.lock().circuits.iter().map(|(address, circuit)| (address.clone(), circuit.state())).collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    /// The circuit breaker shared by every client of `address`, if any client was created for it.
    pub fn circuit(&self, address: &str) -> Option<Arc<CircuitBreaker>> {
        self.lock().circuits.get(&address_label(address)).cloned()
    }

    /// The breaker of `namespace`'s queries to `address`, if any client was created for them.
    pub fn tenant_circuit(&self, address: &str, namespace: &str) -> Option<Arc<CircuitBreaker>> {
        self.lock().tenants.get(&(address_label(address), namespace.to_owned())).cloned()
    }

    /// Forgets sources whose config `keep` rejects (a rotated token, a deleted policy), and breakers no longer
    /// used by any source. Callers holding a dropped source can keep using it.
    pub fn retain(&self, keep: impl Fn(&PrometheusConfig) -> bool) {
        let mut entries = self.lock();
        entries.sources.retain(|(config, _), _| keep(config));
        entries.clients.retain(|config, _| keep(config));
        let live: std::collections::HashSet<(String, String)> =
            entries.sources.keys().map(|(config, ns)| (address_label(&config.address), ns.clone())).collect();
        entries.tenants.retain(|key, _| live.contains(key));
        let addresses: std::collections::HashSet<&String> = live.iter().map(|(address, _)| address).collect();
        entries.circuits.retain(|address, _| addresses.contains(address));
    }

    /// How many distinct sources (config and namespace) exist.
    pub fn len(&self) -> usize {
        self.lock().sources.len()
    }

    /// How many HTTP clients exist: one per distinct config, whatever the namespaces using it.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The address as a metric label and breaker key: no credentials, no trailing slash.
pub(crate) fn address_label(address: &str) -> String {
    match reqwest::Url::parse(address.trim()) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => address.trim().trim_end_matches('/').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Auth, NoopObserver};

    fn pool() -> SourcePool {
        SourcePool::new(BreakerConfig::default(), Arc::new(NoopObserver))
    }

    #[test]
    fn equal_configs_share_one_client() {
        let pool = pool();
        let config = PrometheusConfig::new("http://prom:9090");
        let a = pool.get_or_create(&config, "ns").expect("valid");
        let b = pool.get_or_create(&config.clone(), "ns").expect("valid");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn different_credentials_get_their_own_client_but_share_the_breaker() {
        let pool = pool();
        let plain = PrometheusConfig::new("http://prom:9090");
        let with_token = PrometheusConfig { auth: Some(Auth::Bearer("t".into())), ..plain.clone() };
        let a = pool.get_or_create(&plain, "ns").expect("valid");
        let b = pool.get_or_create(&with_token, "ns").expect("valid");
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.circuit_states(), [("http://prom:9090".to_owned(), CircuitState::Closed)]);
    }

    #[test]
    fn namespaces_using_one_config_share_its_http_client_but_not_their_breakers() {
        let pool = pool();
        let config = PrometheusConfig::new("http://prom:9090");
        for n in 0..100 {
            pool.get_or_create(&config, &format!("ns{n}")).expect("valid");
        }
        assert_eq!((pool.len(), pool.clients()), (100, 1), "one client for 100 namespaces");
        let users = Arc::strong_count(&pool.lock().clients[&config]);
        assert_eq!(users, 1 + 100, "every namespace's source queries through the same client");
        assert!(!Arc::ptr_eq(
            &pool.tenant_circuit("http://prom:9090", "ns0").expect("breaker"),
            &pool.tenant_circuit("http://prom:9090", "ns1").expect("breaker")
        ));
        pool.get_or_create(&PrometheusConfig { auth: Some(Auth::Bearer("t".into())), ..config }, "ns0").expect("valid");
        assert_eq!(pool.clients(), 2, "other credentials: another client");
        pool.retain(|c| c.auth.is_none());
        assert_eq!(pool.clients(), 1);
    }

    #[test]
    fn invalid_configs_are_not_cached() {
        let pool = pool();
        let error = pool.get_or_create(&PrometheusConfig::new("prom"), "ns").err().expect("invalid");
        assert!(matches!(error, ConfigError::InvalidAddress { .. }), "{error:?}");
        assert!(pool.is_empty());
    }

    #[test]
    fn retain_drops_unused_clients_and_breakers() {
        let pool = pool();
        pool.get_or_create(&PrometheusConfig::new("http://a:9090"), "ns").expect("valid");
        pool.get_or_create(&PrometheusConfig::new("http://b:9090"), "ns").expect("valid");
        pool.retain(|config| config.address.contains("//a"));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.circuit_states(), [("http://a:9090".to_owned(), CircuitState::Closed)]);
        assert!(pool.circuit("http://b:9090").is_none());
    }

    #[test]
    fn labels_carry_no_credentials() {
        assert_eq!(address_label("https://user:pw@prom.example:9090/prom/"), "https://prom.example:9090/prom");
        assert_eq!(address_label("http://prom:9090"), "http://prom:9090");
    }

    #[test]
    fn pool_is_shareable_across_threads() {
        let pool = Arc::new(pool());
        let config = PrometheusConfig::new("http://prom:9090");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (pool, config) = (pool.clone(), config.clone());
                std::thread::spawn(move || pool.get_or_create(&config, "ns").map(|_| ()))
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().expect("no panic"), Ok(()));
        }
        assert_eq!(pool.len(), 1);
    }
}
