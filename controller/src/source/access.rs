//! What the cluster admin lets policy authors do with Prometheus: which addresses `spec.prometheus` may name,
//! whether per-policy credentials are read at all, the longest query timeout, and how much of an answer is read.
//!
//! A policy author controls `spec.prometheus`, so everything in it is untrusted input: the address is an SSRF
//! target, and credential references are a way to make the controller read a Secret and send it somewhere.
//! The rules, checked before any Secret is read or any request is sent:
//!
//! ```text
//!   spec.prometheus.address ──► allowed? (--allowed-prometheus-addresses, the default address) ──► else refused
//!   spec.prometheus.auth/ca ──► --policy-credentials on? ──► Secret of type foresight.dev/prometheus-credentials
//!                                 whose `address` key names this very address ──► else refused
//!   spec.prometheus.timeout ──► clamped to --max-query-timeout (status says so)
//! ```
//!
//! Whoever may write the Secret decides where its credentials go; a policy author who can only reference it
//! cannot send it anywhere else.

use std::time::Duration;

use super::pool::address_label;
use super::{Auth, Limits};

/// The Secret type a Secret must have for the controller to read it for a policy.
pub const CREDENTIALS_SECRET_TYPE: &str = "foresight.dev/prometheus-credentials";
/// The key of such a Secret that names the one Prometheus address its credentials may be sent to.
pub const CREDENTIALS_ADDRESS_KEY: &str = "address";
/// The default ceiling on query timeouts.
pub const DEFAULT_MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin's Prometheus settings (controller flags).
#[derive(Clone, Debug)]
pub struct AccessPolicy {
    /// Addresses `spec.prometheus.address` may name, besides the controller's default Prometheus. Compared
    /// without credentials, query string or trailing slash; an entry ending in `/*` allows every path below it.
    pub allowed_addresses: Vec<String>,
    /// Whether `spec.prometheus.auth` and `spec.prometheus.ca` are honoured (the controller then reads Secrets
    /// of type [`CREDENTIALS_SECRET_TYPE`] in the policy's namespace).
    pub policy_credentials: bool,
    /// The longest per-query timeout; a policy asking for more is clamped.
    pub max_query_timeout: Duration,
    /// How much of an answer is read.
    pub limits: Limits,
    /// Credentials for the controller's default Prometheus (never for a policy's own address).
    pub default_auth: Option<Auth>,
    /// Extra root CAs (PEM) for the controller's default Prometheus.
    pub default_ca: Option<Vec<u8>>,
}

impl Default for AccessPolicy {
    /// The safe default: only the controller's default Prometheus, no per-policy credentials.
    fn default() -> Self {
        Self {
            allowed_addresses: Vec::new(),
            policy_credentials: false,
            max_query_timeout: DEFAULT_MAX_QUERY_TIMEOUT,
            limits: Limits::default(),
            default_auth: None,
            default_ca: None,
        }
    }
}

impl AccessPolicy {
    /// Whether a policy may query `address`, given the controller's `default` address.
    pub fn is_allowed(&self, address: &str, default: Option<&str>) -> bool {
        let wanted = address_label(address);
        if default.is_some_and(|d| address_label(d) == wanted) {
            return true;
        }
        self.allowed_addresses.iter().any(|allowed| match allowed.trim().strip_suffix("/*") {
            Some(prefix) => {
                let prefix = address_label(prefix);
                wanted == prefix || wanted.starts_with(&format!("{prefix}/"))
            }
            None => address_label(allowed) == wanted,
        })
    }

    /// `wanted` within the ceiling, and whether it had to be lowered.
    pub fn clamp_timeout(&self, wanted: Duration) -> (Duration, bool) {
        if wanted > self.max_query_timeout { (self.max_query_timeout, true) } else { (wanted, false) }
    }
}

/// Whether two addresses are the same Prometheus for the purpose of binding credentials to it.
pub fn same_address(a: &str, b: &str) -> bool {
    address_label(a) == address_label(b)
}

/// An address as it may be shown in status: no credentials, no query string, bounded, no control characters.
pub fn address_for_humans(address: &str) -> String {
    super::prometheus::sanitise(&address_label(address), 256)
}

/// A Kubernetes object name (DNS-1123 subdomain): what a Secret name must be before it goes into a URL path.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_default_address_is_allowed_by_default() {
        let access = AccessPolicy::default();
        let default = Some("http://prometheus.monitoring:9090");
        assert!(access.is_allowed("http://prometheus.monitoring:9090/", default));
        assert!(!access.is_allowed("http://attacker.example/any/path", default));
        assert!(!access.is_allowed("http://prometheus.monitoring:9090", None));
    }

    #[test]
    fn admins_allow_exact_addresses_or_prefixes() {
        let access = AccessPolicy {
            allowed_addresses: vec!["http://thanos:9090".into(), "https://mimir.example/prometheus/*".into()],
            ..AccessPolicy::default()
        };
        assert!(access.is_allowed("http://thanos:9090/", None));
        assert!(!access.is_allowed("http://thanos:9090/other", None));
        assert!(access.is_allowed("https://mimir.example/prometheus/team-a", None));
        assert!(!access.is_allowed("https://mimir.example/prometheusx", None));
        assert!(!access.is_allowed("https://mimir.example.attacker.io/prometheus/a", None));
    }

    #[test]
    fn timeouts_above_the_ceiling_are_clamped() {
        let access = AccessPolicy::default();
        assert_eq!(access.clamp_timeout(Duration::from_secs(600)), (DEFAULT_MAX_QUERY_TIMEOUT, true));
        assert_eq!(access.clamp_timeout(Duration::from_secs(5)), (Duration::from_secs(5), false));
    }

    #[test]
    fn secret_names_must_be_object_names() {
        for good in ["prom-token", "a", "team.a-creds"] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in ["../../team-b/secrets/x", "", "A", "-x", "x/y", "x..y", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
