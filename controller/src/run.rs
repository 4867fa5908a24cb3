//! `foresight run`: the controller process. Wiring only; every piece lives in its own module.
//!
//! ```text
//!  flags/env ─► telemetry ─► kube Client ─► SourcePool (breakers report to Metrics)
//!                                  │
//!            Lease (kube-lease-manager) ─► leader flag ─► controller::run (one Controller per namespace)
//!            or --shards > 1: shard Leases (shard.rs) ─► Ownership ─┘
//!                                                             │
//!            axum: /metrics /healthz /readyz ◄── Metrics ◄────┘      SIGTERM ─► graceful shutdown
//! ```

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::{ArgAction, Args};
use futures::FutureExt;

use crate::{
    controller::{self, Context, RunOptions, Sources},
    leader,
    metrics::Metrics,
    server, shard,
    source::{
        AccessPolicy, Auth, BreakerConfig, GroupedConfig, GroupedReader, Limits, SourcePool, budget::BudgetConfig,
        promql::tenancy::Tenancy,
    },
    telemetry::{self, LogFormat},
};

/// Flags of `foresight run`; each has an environment variable for use in a Deployment.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The Prometheus used by policies without spec.prometheus, e.g. http://prometheus.monitoring:9090.
    #[arg(long, env = "FORESIGHT_PROMETHEUS_ADDRESS")]
    pub prometheus_address: Option<String>,
    /// Namespaces to watch, comma-separated; empty watches all.
    #[arg(long, env = "FORESIGHT_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,
    /// Policies evaluated at once: per namespace with --namespaces; in all when watching all namespaces, where
    /// one namespace may use at most half of them.
    #[arg(long, env = "FORESIGHT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Elect a leader through a Lease; only the leader patches. Turn off only for a single replica.
    #[arg(long, env = "FORESIGHT_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Split the policies into this many shards, one Lease each, shared among the replicas (1: a single
    /// leader evaluates every policy). Every replica must use the same value.
    #[arg(long, env = "FORESIGHT_SHARDS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::shard::MAX_SHARDS)))]
    pub shards: u32,
    /// Name of the leader Lease (with --shards > 1, the prefix of the shard and member Leases).
    #[arg(long, env = "FORESIGHT_LEASE_NAME", default_value = "foresight-leader")]
    pub lease_name: String,
    /// Namespace of the leader Lease. Default: $POD_NAMESPACE, else "default".
    #[arg(long, env = "FORESIGHT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease is valid without renewal: a standby takes over at most this long after the leader
    /// dies. Whole seconds, as the Lease stores it.
    #[arg(long, env = "FORESIGHT_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_seconds)]
    pub lease_duration: Duration,
    /// How long before the Lease expires the leader renews it; must be shorter than --lease-duration.
    #[arg(long, env = "FORESIGHT_LEASE_RENEW_BEFORE", default_value = "5s", value_parser = parse_lease_seconds)]
    pub lease_renew_before: Duration,
    /// This replica's identity in the Lease and in Events. Default: the host name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "FORESIGHT_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Log format.
    #[arg(long, env = "FORESIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log filter, e.g. info, debug or info,foresight=debug.
    #[arg(long, env = "FORESIGHT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Confine every policy's PromQL (query.promql, queryOverride) to the policy's namespace: off, or
    /// namespace (every selector gets namespace="<policy namespace>"; another namespace is refused).
    #[arg(long, env = "FORESIGHT_PROMQL_TENANCY", value_enum, default_value_t = Tenancy::Off)]
    pub promql_tenancy: Tenancy,
    /// Timeout of each Prometheus query (policies may set their own).
    #[arg(long, env = "FORESIGHT_QUERY_TIMEOUT", default_value = "5s", value_parser = crate::cli::policy_duration)]
    pub query_timeout: Duration,
    /// Prometheus addresses a policy's spec.prometheus.address may name, comma-separated, besides
    /// --prometheus-address; an entry ending in /* allows every path below it. Empty: spec.prometheus may only
    /// name the default Prometheus.
    #[arg(long, env = "FORESIGHT_ALLOWED_PROMETHEUS_ADDRESSES", value_delimiter = ',', default_value = "")]
    pub allowed_prometheus_addresses: Vec<String>,
    /// Honour spec.prometheus.auth and spec.prometheus.ca: read Secrets of type
    /// foresight.dev/prometheus-credentials in the policy's namespace (needs RBAC to get Secrets).
    #[arg(long, env = "FORESIGHT_POLICY_CREDENTIALS", default_value_t = false, action = ArgAction::Set)]
    pub policy_credentials: bool,
    /// The longest per-query timeout; policies asking for more are clamped (and told so in status).
    #[arg(long, env = "FORESIGHT_MAX_QUERY_TIMEOUT", default_value = "30s", value_parser = crate::cli::policy_duration)]
    pub max_query_timeout: Duration,
    /// The largest Prometheus answer read, in bytes; reading stops there and the query fails.
    #[arg(long, env = "FORESIGHT_MAX_RESPONSE_BYTES", default_value_t = Limits::DEFAULT_MAX_RESPONSE_BYTES)]
    pub max_response_bytes: usize,
    /// The most series one Prometheus answer may hold.
    #[arg(long, env = "FORESIGHT_MAX_SERIES", default_value_t = Limits::DEFAULT_MAX_SERIES)]
    pub max_series: usize,
    /// A file holding the bearer token for the default Prometheus (e.g. a mounted Secret key).
    #[arg(long, env = "FORESIGHT_PROMETHEUS_BEARER_TOKEN_FILE", conflicts_with = "prometheus_username_file")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// A file holding the basic-auth user name for the default Prometheus; needs --prometheus-password-file.
    #[arg(long, env = "FORESIGHT_PROMETHEUS_USERNAME_FILE", requires = "prometheus_password_file")]
    pub prometheus_username_file: Option<PathBuf>,
    /// A file holding the basic-auth password for the default Prometheus.
    #[arg(long, env = "FORESIGHT_PROMETHEUS_PASSWORD_FILE", requires = "prometheus_username_file")]
    pub prometheus_password_file: Option<PathBuf>,
    /// A PEM CA bundle trusted (on top of the system's) for the default Prometheus.
    #[arg(long, env = "FORESIGHT_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Answer the built-in templates of all the policies of a namespace from one grouped query per template and
    /// interval (aggregated per policy in process), and send identical queries once per interval.
    #[arg(long, env = "FORESIGHT_GROUPED_QUERIES", default_value_t = true, action = ArgAction::Set)]
    pub grouped_queries: bool,
    /// Prometheus queries in flight at once, per Prometheus address (with --grouped-queries).
    #[arg(long, env = "FORESIGHT_MAX_QUERIES_IN_FLIGHT", default_value_t = 32)]
    pub max_queries_in_flight: usize,
    /// How long an open circuit breaker (after 5 failures in a row) refuses queries before it lets one probe
    /// through.
    #[arg(long, env = "FORESIGHT_CIRCUIT_COOL_OFF", default_value = "30s", value_parser = crate::cli::policy_duration)]
    pub circuit_cool_off: Duration,
    /// Queries per second one namespace may send on average (with --grouped-queries).
    #[arg(long, env = "FORESIGHT_NAMESPACE_QUERY_RATE", default_value_t = 20.0)]
    pub namespace_query_rate: f64,
    /// Queries one namespace may send in a burst (with --grouped-queries).
    #[arg(long, env = "FORESIGHT_NAMESPACE_QUERY_BURST", default_value_t = 300.0)]
    pub namespace_query_burst: f64,
}

impl RunArgs {
    /// The namespaces to watch, without empty entries (an empty list watches all).
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect()
    }

    /// The Lease's namespace: the flag, else `pod_namespace`, else "default".
    pub fn lease_namespace(&self, pod_namespace: Option<String>) -> String {
        self.lease_namespace.clone().or(pod_namespace).filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into())
    }

    /// The Lease timing, checked: the renewal must come before the expiry.
    pub fn lease_timing(&self) -> anyhow::Result<(u64, u64)> {
        let (duration, grace) = (self.lease_duration.as_secs(), self.lease_renew_before.as_secs());
        anyhow::ensure!(
            grace < duration,
            "--lease-renew-before ({grace}s) must be shorter than --lease-duration ({duration}s)"
        );
        Ok((duration, grace))
    }

    /// What policies may do with Prometheus, and the default Prometheus' credentials read from their files.
    pub fn access(&self) -> anyhow::Result<AccessPolicy> {
        use anyhow::Context as _;
        let read =
            |path: &PathBuf| std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()));
        anyhow::ensure!(!self.max_query_timeout.is_zero(), "--max-query-timeout must be positive");
        anyhow::ensure!(self.max_response_bytes > 0, "--max-response-bytes must be positive");
        let default_auth = match (&self.prometheus_bearer_token_file, &self.prometheus_username_file) {
            (Some(token), _) => Some(Auth::Bearer(read(token)?.trim().to_owned())),
            (None, Some(user)) => {
                let password = self.prometheus_password_file.as_ref().context("--prometheus-password-file")?;
                Some(Auth::Basic {
                    username: read(user)?.trim().to_owned(),
                    password: read(password)?.trim().to_owned(),
                })
            }
            (None, None) => None,
        };
        let default_ca = match &self.prometheus_ca_file {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?),
            None => None,
        };
        Ok(AccessPolicy {
            allowed_addresses: self
                .allowed_prometheus_addresses
                .iter()
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            policy_credentials: self.policy_credentials,
            max_query_timeout: self.max_query_timeout,
            limits: Limits { max_response_bytes: self.max_response_bytes, max_series: self.max_series.max(1) },
            default_auth,
            default_ca,
        })
    }

    /// This replica's identity: the flag, else the host name, else "foresight".
    pub fn identity(&self) -> String {
        self.pod_name.clone().filter(|n| !n.is_empty()).or_else(hostname).unwrap_or_else(|| "foresight".into())
    }
}

/// A duration of at least one whole second (a Lease counts in seconds).
fn parse_lease_seconds(text: &str) -> Result<Duration, String> {
    let d = crate::cli::policy_duration(text)?;
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err(format!("{text}: a lease time is a whole number of seconds, at least 1s"));
    }
    Ok(d)
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    // One TLS provider for the whole binary (kube and reqwest both use rustls).
    let _ = rustls::crypto::ring::default_provider().install_default();
    telemetry::init(args.log_format, &args.log_level)?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let identity = args.identity();
    let access = args.access()?;
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let breaker = BreakerConfig { cool_off: args.circuit_cool_off, ..BreakerConfig::default() };
    let pool = Arc::new(SourcePool::new(breaker, metrics.clone()));
    let leader = Arc::new(AtomicBool::new(!args.leader_election));
    metrics.set_leader(!args.leader_election);
    let sharded = args.leader_election && args.shards > shard::SINGLE_SHARD;
    let (duration_seconds, grace_seconds) = if args.leader_election {
        args.lease_timing()?
    } else {
        (leader::LEASE_DURATION_SECONDS, leader::LEASE_GRACE_SECONDS)
    };
    let lease_namespace = args.lease_namespace(std::env::var("POD_NAMESPACE").ok());
    let shard_config = shard::ShardConfig {
        namespace: lease_namespace.clone(),
        prefix: args.lease_name.clone(),
        identity: identity.clone(),
        shards: args.shards,
        duration_seconds,
        grace_seconds,
    };
    let ownership = Arc::new(shard::Ownership::new(args.shards, shard_config.renew_deadline()));
    let owns: server::Owns = if sharded {
        let ownership = ownership.clone();
        Box::new(move |namespace, name| ownership.owns(namespace, name))
    } else {
        let leader = leader.clone();
        Box::new(move |_, _| leader.load(std::sync::atomic::Ordering::SeqCst))
    };
    // The loop reports to /metrics through the liveness tracker behind /healthz.
    let liveness = Arc::new(server::Liveness::new(metrics.clone(), owns));
    let mut context = Context::new(client.clone(), Sources::Pool(pool), args.prometheus_address.clone(), &identity)
        .with_telemetry(liveness.clone())
        .with_leader(leader.clone())
        .with_query_timeout(args.query_timeout)
        .with_promql_tenancy(args.promql_tenancy)
        .with_access(access)
        .with_grouped(args.grouped_queries.then(|| {
            let config = GroupedConfig {
                max_in_flight: args.max_queries_in_flight.max(1),
                budget: BudgetConfig { per_second: args.namespace_query_rate, burst: args.namespace_query_burst },
            };
            Arc::new(GroupedReader::new(config, metrics.clone()))
        }));
    if sharded {
        context = context.with_shards(ownership.clone());
    }
    let ctx = Arc::new(context);

    let shutdown = shutdown_signal().shared();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = server::bind(args.metrics_address).await?;
    let http = tokio::spawn(server::serve(listener, metrics.clone(), ready.clone(), Some(liveness), shutdown.clone()));

    let sharding = sharded.then(|| shard::start(client.clone(), shard_config, ownership, metrics.clone()));
    let election = if args.leader_election && !sharded {
        let namespace = lease_namespace;
        tracing::info!(%namespace, lease = %args.lease_name, %identity, "campaigning for leadership");
        let config = leader::LeaseConfig {
            duration_seconds,
            grace_seconds,
            ..leader::LeaseConfig::new(namespace, args.lease_name.clone(), identity.clone())
        };
        Some(leader::start(client, &config, leader, metrics.clone()).await?)
    } else {
        None
    };

    let options = RunOptions { namespaces: args.namespaces(), concurrency: args.concurrency.max(1) };
    tracing::info!(namespaces = ?options.namespaces, concurrency = options.concurrency, "controller starting");
    controller::run(ctx, options, ready, shutdown.clone()).await;
    tracing::info!("controller stopped");

    if let Some(election) = election {
        election.stop().await;
    }
    if let Some(sharding) = sharding {
        sharding.stop().await;
    }
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "metrics server failed"),
        Err(error) => tracing::warn!(%error, "metrics server task failed"),
    }
    Ok(())
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> RunArgs {
        let mut argv = vec!["foresight", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(args) => args,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn every_flag_has_its_documented_environment_variable() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run subcommand");
        let envs: Vec<(String, String)> = run
            .get_arguments()
            .filter_map(|a| Some((a.get_id().to_string(), a.get_env()?.to_string_lossy().into_owned())))
            .collect();
        for (flag, env) in [
            ("prometheus_address", "FORESIGHT_PROMETHEUS_ADDRESS"),
            ("namespaces", "FORESIGHT_NAMESPACES"),
            ("concurrency", "FORESIGHT_CONCURRENCY"),
            ("leader_election", "FORESIGHT_LEADER_ELECTION"),
            ("shards", "FORESIGHT_SHARDS"),
            ("lease_name", "FORESIGHT_LEASE_NAME"),
            ("lease_namespace", "FORESIGHT_LEASE_NAMESPACE"),
            ("lease_duration", "FORESIGHT_LEASE_DURATION"),
            ("lease_renew_before", "FORESIGHT_LEASE_RENEW_BEFORE"),
            ("pod_name", "POD_NAME"),
            ("metrics_address", "FORESIGHT_METRICS_ADDRESS"),
            ("log_format", "FORESIGHT_LOG_FORMAT"),
            ("log_level", "FORESIGHT_LOG_LEVEL"),
            ("query_timeout", "FORESIGHT_QUERY_TIMEOUT"),
            ("promql_tenancy", "FORESIGHT_PROMQL_TENANCY"),
            ("allowed_prometheus_addresses", "FORESIGHT_ALLOWED_PROMETHEUS_ADDRESSES"),
            ("policy_credentials", "FORESIGHT_POLICY_CREDENTIALS"),
            ("max_query_timeout", "FORESIGHT_MAX_QUERY_TIMEOUT"),
            ("max_response_bytes", "FORESIGHT_MAX_RESPONSE_BYTES"),
            ("max_series", "FORESIGHT_MAX_SERIES"),
            ("prometheus_bearer_token_file", "FORESIGHT_PROMETHEUS_BEARER_TOKEN_FILE"),
            ("prometheus_username_file", "FORESIGHT_PROMETHEUS_USERNAME_FILE"),
            ("prometheus_password_file", "FORESIGHT_PROMETHEUS_PASSWORD_FILE"),
            ("prometheus_ca_file", "FORESIGHT_PROMETHEUS_CA_FILE"),
            ("grouped_queries", "FORESIGHT_GROUPED_QUERIES"),
            ("max_queries_in_flight", "FORESIGHT_MAX_QUERIES_IN_FLIGHT"),
            ("circuit_cool_off", "FORESIGHT_CIRCUIT_COOL_OFF"),
            ("namespace_query_rate", "FORESIGHT_NAMESPACE_QUERY_RATE"),
            ("namespace_query_burst", "FORESIGHT_NAMESPACE_QUERY_BURST"),
        ] {
            assert!(envs.contains(&(flag.to_string(), env.to_string())), "{flag} should read {env}: {envs:?}");
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let args = parse(&[]);
        assert_eq!(args.namespaces(), Vec::<String>::new());
        assert_eq!(args.concurrency, 16);
        assert!(args.leader_election);
        assert_eq!(args.shards, 1, "a single leader unless asked");
        assert_eq!(args.promql_tenancy, Tenancy::Off);
        assert_eq!(args.lease_name, "foresight-leader");
        assert_eq!(args.metrics_address, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(args.log_format, LogFormat::Auto);
        assert_eq!(args.log_level, "info");
        assert_eq!(args.query_timeout, Duration::from_secs(5));
        assert_eq!(args.circuit_cool_off, BreakerConfig::default().cool_off);
        assert!(args.grouped_queries);
        assert_eq!(
            (args.max_queries_in_flight, args.namespace_query_rate, args.namespace_query_burst),
            (32, 20.0, 300.0)
        );
        assert_eq!(args.lease_namespace(None), "default");
        assert_eq!(args.lease_namespace(Some("foresight-system".into())), "foresight-system");
        assert_eq!(args.lease_timing().expect("valid"), (leader::LEASE_DURATION_SECONDS, leader::LEASE_GRACE_SECONDS));
    }

    #[test]
    fn lease_timing_is_flags_in_whole_seconds_with_renewal_before_expiry() {
        let args = parse(&["--lease-duration", "30s", "--lease-renew-before", "10s"]);
        assert_eq!(args.lease_timing().expect("valid"), (30, 10));
        let late = parse(&["--lease-duration", "10s", "--lease-renew-before", "10s"]);
        let error = late.lease_timing().expect_err("renewal at expiry");
        assert!(error.to_string().contains("must be shorter than --lease-duration"), "{error}");
        for bad in ["1500ms", "0s", "soon"] {
            let parsed = Cli::try_parse_from(["foresight", "run", "--lease-duration", bad]);
            assert!(parsed.is_err(), "--lease-duration {bad} was accepted");
        }
    }

    #[test]
    fn flags_override_defaults() {
        let args = parse(&[
            "--namespaces",
            "shop, payments,",
            "--leader-election",
            "false",
            "--query-timeout",
            "1500ms",
            "--lease-namespace",
            "ops",
            "--pod-name",
            "foresight-0",
            "--log-format",
            "json",
        ]);
        assert_eq!(args.namespaces(), ["shop", "payments"]);
        assert!(!args.leader_election);
        assert_eq!(args.query_timeout, Duration::from_millis(1500));
        assert_eq!(args.lease_namespace(Some("ignored".into())), "ops");
        assert_eq!(args.identity(), "foresight-0");
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(parse(&["--shards", "16"]).shards, 16);
        assert_eq!(parse(&["--promql-tenancy", "namespace"]).promql_tenancy, Tenancy::Namespace);
        for bad in ["0", "1025", "many"] {
            let error = Cli::try_parse_from(["foresight", "run", "--shards", bad]).expect_err("bad shard count");
            assert!(error.to_string().contains("--shards"), "{error}");
        }
    }

    #[test]
    fn by_default_policies_get_only_the_default_prometheus_and_no_credentials() {
        let access = parse(&[]).access().expect("valid");
        assert!(access.allowed_addresses.is_empty());
        assert!(!access.policy_credentials);
        assert_eq!(access.max_query_timeout, Duration::from_secs(30));
        assert_eq!(access.limits, Limits::default());
        assert!(access.default_auth.is_none() && access.default_ca.is_none());
    }

    #[test]
    fn access_flags_and_default_credentials_files_are_read() {
        let dir = std::env::temp_dir().join(format!("foresight-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").expect("write token");
        let args = parse(&[
            "--allowed-prometheus-addresses",
            "http://thanos:9090, https://mimir/prometheus/*",
            "--policy-credentials",
            "true",
            "--max-query-timeout",
            "10s",
            "--max-response-bytes",
            "1048576",
            "--prometheus-bearer-token-file",
            token.to_str().expect("utf-8 path"),
        ]);
        let access = args.access().expect("valid");
        assert_eq!(access.allowed_addresses, ["http://thanos:9090", "https://mimir/prometheus/*"]);
        assert!(access.policy_credentials);
        assert_eq!(access.max_query_timeout, Duration::from_secs(10));
        assert_eq!(access.limits.max_response_bytes, 1_048_576);
        assert_eq!(access.default_auth, Some(Auth::Bearer("s3cret".into())));
        let missing = parse(&["--prometheus-ca-file", "/nonexistent/ca.pem"]).access().expect_err("no file");
        assert!(missing.to_string().contains("/nonexistent/ca.pem"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_named() {
        let error = Cli::try_parse_from(["foresight", "run", "--query-timeout", "soon"]).expect_err("bad duration");
        assert!(error.to_string().contains("--query-timeout"), "{error}");
        let error = Cli::try_parse_from(["foresight", "run", "--metrics-address", "8080"]).expect_err("bad address");
        assert!(error.to_string().contains("--metrics-address"), "{error}");
    }
}
