//! What can go wrong in one reconcile, one variant per operation, each with a low-cardinality category for
//! metric labels and condition reasons.

use crate::source::ConfigError;

/// A failed reconcile step. The reconcile is retried with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy object has no namespace (it is namespaced; this only happens with a malformed object).
    #[error("the ScalingPolicy has no namespace")]
    MissingNamespace,
    /// The target's kind could not be resolved to an API resource (unknown kind, or discovery failed).
    #[error("cannot resolve {api_version} {kind}: {source}")]
    ResolveTarget {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    /// The target does not exist, or its kind has no /scale subresource.
    #[error("target {kind} {name:?} not found (or it has no /scale subresource)")]
    TargetNotFound { kind: String, name: String },
    /// Reading the target's /scale failed for another reason (API server down, forbidden...).
    #[error("cannot read /scale of {kind} {name:?}: {source}")]
    GetScale {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Patching the target's /scale failed (409 conflict, 5xx, forbidden...).
    #[error("cannot patch /scale of {kind} {name:?}: {source}")]
    PatchScale {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the policy's status failed.
    #[error("cannot write the ScalingPolicy status: {source}")]
    PatchStatus {
        #[source]
        source: kube::Error,
    },
    /// Reading a Secret the Prometheus config refers to failed.
    #[error("cannot read Secret {name:?}: {source}")]
    GetSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The Secret exists but lacks the key, or its value is not UTF-8.
    #[error("Secret {name:?} has no UTF-8 key {key:?}")]
    SecretKey { name: String, key: String },
    /// Neither the policy nor the controller names a Prometheus.
    #[error("no Prometheus address: set spec.prometheus.address or the controller's --prometheus-address")]
    NoPrometheus,
    /// spec.prometheus.address is not one the admin allows.
    #[error(
        "Prometheus address {address} is not allowed: the controller only queries its default Prometheus and the addresses its admin allows (--allowed-prometheus-addresses); nothing was sent"
    )]
    PrometheusNotAllowed { address: String },
    /// spec.prometheus names Secrets, but the admin has not enabled per-policy credentials.
    #[error(
        "spec.prometheus.auth and spec.prometheus.ca are disabled on this controller (--policy-credentials); no Secret was read and nothing was sent"
    )]
    PolicyCredentialsDisabled,
    /// A Secret reference that is not a Kubernetes object name.
    #[error("Secret name {name:?} is not a valid object name (DNS-1123 subdomain)")]
    InvalidSecretName { name: String },
    /// The Secret does not opt in to being read for Prometheus.
    #[error(
        "Secret {name:?} is not of type foresight.dev/prometheus-credentials; Foresight reads only Secrets made for it, and sent nothing"
    )]
    SecretNotOptedIn { name: String },
    /// The Secret's `address` key does not name the policy's Prometheus address.
    #[error(
        "Secret {name:?} does not name this Prometheus address in its \"address\" key; its credentials are sent only to the address recorded there, and nothing was sent"
    )]
    SecretBoundElsewhere { name: String },
    /// A header that would change where or how the request is sent.
    #[error("header {name:?} may not be set in spec.prometheus.headers")]
    ForbiddenHeader { name: String },
    /// A header whose name or value could not be sent as is (a policy stored without the CRD's schema).
    #[error("header {name:?} in spec.prometheus.headers cannot be sent: {problem}")]
    InvalidHeader { name: String, problem: &'static str },
    /// The Prometheus settings cannot be used (bad address, header, CA...).
    #[error("invalid Prometheus settings: {0}")]
    PrometheusConfig(#[from] ConfigError),
    /// The evaluation took longer than its deadline and was abandoned (a slow or unresponsive Prometheus).
    #[error("the evaluation took longer than its deadline of {}s and was abandoned (is Prometheus slow or unresponsive?)", deadline.as_secs())]
    EvaluationTimedOut { deadline: std::time::Duration },
    /// A status could not be turned into a patch.
    #[error("cannot serialize the status patch: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    /// A short, low-cardinality name for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingNamespace => "missing_namespace",
            Error::ResolveTarget { .. } => "resolve_target",
            Error::TargetNotFound { .. } => "target_not_found",
            Error::GetScale { .. } => "get_scale",
            Error::PatchScale { .. } => "patch_scale",
            Error::PatchStatus { .. } => "patch_status",
            Error::GetSecret { .. } => "get_secret",
            Error::SecretKey { .. } => "secret_key",
            Error::NoPrometheus => "no_prometheus",
            Error::PrometheusNotAllowed { .. } => "prometheus_not_allowed",
            Error::PolicyCredentialsDisabled => "policy_credentials_disabled",
            Error::InvalidSecretName { .. } => "invalid_secret_name",
            Error::SecretNotOptedIn { .. } => "secret_not_opted_in",
            Error::SecretBoundElsewhere { .. } => "secret_bound_elsewhere",
            Error::ForbiddenHeader { .. } => "forbidden_header",
            Error::InvalidHeader { .. } => "invalid_header",
            Error::PrometheusConfig(_) => "prometheus_config",
            Error::EvaluationTimedOut { .. } => "evaluation_timed_out",
            Error::Serialize(_) => "serialize",
        }
    }

    /// A CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingNamespace => "MissingNamespace",
            Error::ResolveTarget { .. } => "UnknownTargetKind",
            Error::TargetNotFound { .. } => "TargetNotFound",
            Error::GetScale { .. } => "GetScaleFailed",
            Error::PatchScale { .. } => "ScaleFailed",
            Error::PatchStatus { .. } => "StatusWriteFailed",
            Error::GetSecret { .. } | Error::SecretKey { .. } => "SecretUnavailable",
            Error::EvaluationTimedOut { .. } => "EvaluationTimedOut",
            Error::NoPrometheus
            | Error::PrometheusConfig(_)
            | Error::ForbiddenHeader { .. }
            | Error::InvalidHeader { .. } => "PrometheusMisconfigured",
            Error::PrometheusNotAllowed { .. } => "PrometheusAddressNotAllowed",
            Error::PolicyCredentialsDisabled => "PolicyCredentialsDisabled",
            Error::InvalidSecretName { .. } | Error::SecretNotOptedIn { .. } | Error::SecretBoundElsewhere { .. } => {
                "SecretNotAllowed"
            }
            Error::Serialize(_) => "InternalError",
        }
    }

    /// Whether the API server said the object is not there (404).
    pub fn is_not_found(source: &kube::Error) -> bool {
        matches!(source, kube::Error::Api(status) if status.is_not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct() {
        let api = || kube::Error::Api(Box::new(kube::core::Status::failure("boom", "InternalError").with_code(500)));
        let errors = [
            Error::MissingNamespace,
            Error::ResolveTarget { api_version: "x/v1".into(), kind: "X".into(), source: api() },
            Error::TargetNotFound { kind: "Deployment".into(), name: "web".into() },
            Error::GetScale { kind: "Deployment".into(), name: "web".into(), source: api() },
            Error::PatchScale { kind: "Deployment".into(), name: "web".into(), source: api() },
            Error::PatchStatus { source: api() },
            Error::GetSecret { name: "s".into(), source: api() },
            Error::SecretKey { name: "s".into(), key: "k".into() },
            Error::NoPrometheus,
            Error::PrometheusNotAllowed { address: "http://x".into() },
            Error::PolicyCredentialsDisabled,
            Error::InvalidSecretName { name: "../x".into() },
            Error::SecretNotOptedIn { name: "s".into() },
            Error::SecretBoundElsewhere { name: "s".into() },
            Error::ForbiddenHeader { name: "Host".into() },
            Error::InvalidHeader { name: "X".into(), problem: "bad" },
            Error::PrometheusConfig(ConfigError::ZeroTimeout),
            Error::EvaluationTimedOut { deadline: std::time::Duration::from_secs(15) },
            Error::Serialize(serde_json::from_str::<i32>("x").expect_err("not json")),
        ];
        let mut categories: Vec<_> = errors.iter().map(Error::category).collect();
        categories.sort_unstable();
        categories.dedup();
        assert_eq!(categories.len(), errors.len());
    }

    #[test]
    fn not_found_is_recognised_from_the_status_code() {
        let gone = kube::Error::Api(Box::new(kube::core::Status::failure("gone", "NotFound").with_code(404)));
        assert!(Error::is_not_found(&gone));
        let conflict = kube::Error::Api(Box::new(kube::core::Status::failure("stale", "Conflict").with_code(409)));
        assert!(!Error::is_not_found(&conflict));
    }
}
