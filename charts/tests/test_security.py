"""Tenant isolation settings of the chart: what policies may make the controller do with Prometheus,
the default Prometheus' own credentials, and who may scrape /metrics (see docs/security.md)."""

from __future__ import annotations

import pytest

from conftest import OVERLAYS, render


def args(values: dict | None = None) -> list[str]:
    return render(values).container()["args"]


def flag(argv: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) <= 1, values
    return values[0] if values else None


def test_by_default_policies_get_only_the_default_prometheus_and_no_credentials() -> None:
    argv = args()
    assert flag(argv, "allowed-prometheus-addresses") is None
    assert flag(argv, "policy-credentials") == "false"
    assert flag(argv, "max-query-timeout") == "30s"
    assert flag(argv, "max-response-bytes") == "4194304"
    assert flag(argv, "max-series") == "10000"
    assert not [a for a in argv if a.startswith("--prometheus-bearer-token-file")]


def test_admin_settings_become_flags() -> None:
    argv = args(
        {
            "prometheus": {
                "allowedAddresses": ["http://thanos.monitoring:9090", "https://mimir.example/prometheus/*"],
                "maxQueryTimeout": "10s",
                "maxResponseBytes": 1048576,
                "maxSeries": 10,
                "auth": {"enabled": True},
            }
        }
    )
    assert flag(argv, "allowed-prometheus-addresses") == "http://thanos.monitoring:9090,https://mimir.example/prometheus/*"
    assert flag(argv, "max-query-timeout") == "10s"
    assert flag(argv, "max-response-bytes") == "1048576"
    assert flag(argv, "max-series") == "10"
    assert flag(argv, "policy-credentials") == "true"


def test_policy_credentials_flag_and_secrets_rbac_go_together(overlay) -> None:
    name, rendered = overlay
    enabled = OVERLAYS[name].get("prometheus", {}).get("auth", {}).get("enabled", False)
    assert flag(rendered.container()["args"], "policy-credentials") == str(enabled).lower()
    roles = rendered.of_kind("Role") + rendered.of_kind("ClusterRole")
    secret_rules = [r for role in roles for r in role["rules"] if "secrets" in r["resources"]]
    # Only `get`: never list or watch, which would put every Secret of a namespace in memory.
    assert all(r["verbs"] == ["get"] for r in secret_rules), secret_rules
    assert bool(secret_rules) == enabled


def test_default_prometheus_credentials_come_from_a_mounted_secret() -> None:
    r = render(
        {
            "prometheus": {
                "address": "https://prometheus.monitoring:9090",
                "defaultAuth": {"secretName": "prom-creds", "bearerTokenKey": "token", "caKey": "ca.crt"},
            }
        }
    )
    argv = r.container()["args"]
    assert flag(argv, "prometheus-bearer-token-file") == "/etc/foresight/prometheus-auth/token"
    assert flag(argv, "prometheus-ca-file") == "/etc/foresight/prometheus-auth/ca.crt"
    assert r.container()["volumeMounts"] == [
        {"name": "prometheus-auth", "mountPath": "/etc/foresight/prometheus-auth", "readOnly": True}
    ]
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "prometheus-auth", "secret": {"secretName": "prom-creds"}}]
    # Mounted by the kubelet: no Secret read permission is granted for it.
    roles = r.of_kind("Role") + r.of_kind("ClusterRole")
    assert not [rule for role in roles for rule in role["rules"] if "secrets" in rule["resources"]]

    basic = render(
        {"prometheus": {"defaultAuth": {"secretName": "prom-creds", "usernameKey": "user", "passwordKey": "pass"}}}
    ).container()["args"]
    assert flag(basic, "prometheus-username-file") == "/etc/foresight/prometheus-auth/user"
    assert flag(basic, "prometheus-password-file") == "/etc/foresight/prometheus-auth/pass"


@pytest.mark.parametrize(
    "default_auth",
    [
        {"secretName": "s", "bearerTokenKey": "t", "usernameKey": "u", "passwordKey": "p"},
        {"secretName": "s", "usernameKey": "u"},
    ],
)
def test_contradictory_default_credentials_fail_the_install(default_auth) -> None:
    with pytest.raises(Exception, match="prometheus.defaultAuth"):
        render({"prometheus": {"defaultAuth": default_auth}})


def test_metrics_are_scrapable_only_from_the_monitoring_namespace_by_default() -> None:
    np = render().one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress"]
    assert np["spec"]["ingress"] == [
        {
            "ports": [{"port": "metrics", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        }
    ]


@pytest.mark.parametrize(
    "values",
    [
        {"prometheus": {"allowedAddresses": ["prom:9090"]}},
        {"prometheus": {"allowedAddresses": ["http://a:9090,http://b:9090"]}},
        {"prometheus": {"defaultAuth": {"secretName": "../../x"}}},
        {"prometheus": {"maxResponseBytes": 0}},
    ],
)
def test_bad_security_values_are_rejected_by_the_schema(values) -> None:
    with pytest.raises(Exception):
        render(values)
