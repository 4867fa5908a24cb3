"""The chart lints strictly, renders in every install mode, and what it renders is valid
Kubernetes, wired together (selectors, ports, ServiceAccount) and locked down."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate.utils as kv
import pytest
import yaml

from conftest import CHART, FULL, NAMESPACE, OVERLAYS, RELEASE, render

# prometheus-operator kinds: kubernetes-validate ships no schema for them (they are CRDs), so
# they are checked structurally in test_monitors_scrape_the_metrics_port instead.
NO_BUILTIN_SCHEMA = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor")}

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the
# installed validator knows, read from the package rather than guessed.
K8S_VERSIONS = ["1.31.0", kv.latest_version()]


def test_validator_knows_a_version_newer_than_the_minimum() -> None:
    assert K8S_VERSIONS[1] != K8S_VERSIONS[0]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.31.0-0"


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == "0.1.0"
    crate = (CHART.parents[1] / "Cargo.toml").read_text()
    assert '\nversion = "0.1.0"' in crate, "appVersion must follow the crate version in Cargo.toml"


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_lint_strict(name: str) -> None:
    report = helm.lint(str(CHART), OVERLAYS[name], strict=True, namespace=NAMESPACE)
    errors = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors, errors


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(overlay, version: str) -> None:
    name, rendered = overlay
    unvalidated = []
    for obj in rendered.objects:
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError:
            unvalidated.append((obj["apiVersion"], obj["kind"]))
    assert set(unvalidated) <= NO_BUILTIN_SCHEMA, f"{name}: no schema for {unvalidated}"


def test_default_install_objects() -> None:
    kinds = sorted(o["kind"] for o in render().objects)
    assert kinds == sorted(
        [
            "Deployment", "ServiceAccount", "Service", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "NetworkPolicy",
        ]
    )


def test_full_install_objects() -> None:
    kinds = sorted(o["kind"] for o in render(FULL).objects)
    assert kinds == sorted(
        [
            "Deployment", "ServiceAccount", "Service", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
            "ServiceMonitor", "PodMonitor", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
        ]
    )


def test_everything_is_in_the_release_namespace_except_cluster_scoped_and_watched(overlay) -> None:
    name, rendered = overlay
    allowed = {NAMESPACE, *OVERLAYS[name].get("watchNamespaces", [])}
    if OVERLAYS[name].get("dashboard", {}).get("namespace"):
        allowed.add(OVERLAYS[name]["dashboard"]["namespace"])
    for obj in rendered.objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        else:
            assert obj["metadata"]["namespace"] in allowed, obj["metadata"]


def test_security_context(overlay) -> None:
    _, rendered = overlay
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = rendered.container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532 and sc["runAsGroup"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in sc or sc["privileged"] is False


def test_deployment_defaults() -> None:
    r = render()
    dep = r.one("Deployment")
    assert dep["spec"]["replicas"] == 2
    c = r.container()
    assert c["image"] == "ghcr.io/foresight-autoscaler/foresight:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == [
        "run",
        "--concurrency=16",
        "--leader-election=true",
        f"--lease-name={RELEASE}-foresight-leader",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--lease-duration=15s",
        "--lease-renew-before=5s",
        "--metrics-address=0.0.0.0:8080",
        "--log-format=json",
        "--log-level=info",
        "--query-timeout=5s",
        "--max-query-timeout=30s",
        "--max-response-bytes=4194304",
        "--max-series=10000",
        "--policy-credentials=false",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert c["resources"]["limits"] == {"memory": "256Mi"}


def test_namespaced_mode_passes_namespaces_and_prometheus() -> None:
    c = render(OVERLAYS["namespaced"]).container()
    assert "--namespaces=team-a,team-b" in c["args"]
    assert "--prometheus-address=http://prometheus.monitoring.svc:9090" in c["args"]
    assert not any(a.startswith("--namespaces") for a in render().container()["args"])


def test_full_mode_pod_settings() -> None:
    r = render(FULL)
    pod = r.one("Deployment")["spec"]["template"]["spec"]
    c = r.container()
    assert c["image"] == "ghcr.io/foresight-autoscaler/foresight:0.1.0@sha256:" + "a" * 64
    assert c["args"][-1] == "--some-future-flag=1"
    assert {"name": "RUST_BACKTRACE", "value": "1"} in c["env"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == FULL["tolerations"]
    assert pod["affinity"] == FULL["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    (spread,) = pod["topologySpreadConstraints"]
    # A constraint without a labelSelector would count every pod in the zone: the chart fills in ours.
    assert spread["labelSelector"]["matchLabels"] == r.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    own = {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
           "labelSelector": {"matchLabels": {"x": "y"}}}
    kept = render({"topologySpreadConstraints": [own]}).one("Deployment")["spec"]["template"]["spec"]
    assert kept["topologySpreadConstraints"] == [own]
    meta = r.one("Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"example.com/a": "b"}
    assert meta["labels"]["team"] == "platform"


def test_log_settings_and_tuning_reach_the_flags() -> None:
    c = render(
        {
            "controller": {"logLevel": "info,foresight=debug", "logFormat": "pretty", "concurrency": 4},
            "prometheus": {"queryTimeout": "1500ms"},
            "metrics": {"host": "::", "port": 9000},
        }
    ).container()
    assert "--log-level=info,foresight=debug" in c["args"]
    assert "--log-format=pretty" in c["args"]
    assert "--concurrency=4" in c["args"]
    assert "--query-timeout=1500ms" in c["args"]
    assert "--metrics-address=[::]:9000" in c["args"]
    assert c["ports"][0]["containerPort"] == 9000


def test_lease_timing_reaches_the_flags_and_bad_values_are_refused() -> None:
    c = render({"controller": {"leaderElection": {"leaseDuration": "1m", "renewBefore": "20s"}}}).container()
    assert "--lease-duration=1m" in c["args"]
    assert "--lease-renew-before=20s" in c["args"]
    for bad in ("1500ms", "0s", "soon"):
        with pytest.raises(helm.HelmError, match="leaseDuration"):
            render({"controller": {"leaderElection": {"leaseDuration": bad}}})


def test_shards_and_promql_tenancy_reach_the_flags_only_when_set() -> None:
    default = render({}).container()["args"]
    assert not any(a.startswith(("--shards", "--promql-tenancy")) for a in default)
    c = render({"replicaCount": 3, "controller": {"leaderElection": {"shards": 16}, "promqlTenancy": "namespace"}})
    assert "--shards=16" in c.container()["args"]
    assert "--promql-tenancy=namespace" in c.container()["args"]
    lease_rules = [r for o in c.objects if o["kind"] == "Role" for r in o["rules"] if "leases" in r["resources"]]
    assert {"get", "list", "update", "delete"} <= {v for r in lease_rules for v in r["verbs"]}, lease_rules
    for bad in ({"leaderElection": {"shards": 0}}, {"promqlTenancy": "tenant"}):
        with pytest.raises(helm.HelmError):
            render({"controller": bad})


def test_without_leader_election_no_lease_flags() -> None:
    c = render(OVERLAYS["single-no-leader-election"]).container()
    assert "--leader-election=false" in c["args"]
    assert not any(a.startswith("--lease-") for a in c["args"])


def test_two_replicas_without_leader_election_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render({"controller": {"leaderElection": {"enabled": False}}})


def test_existing_service_account_must_be_named() -> None:
    with pytest.raises(helm.HelmError, match="serviceAccount.name"):
        render({"serviceAccount": {"create": False}})
    r = render({"serviceAccount": {"create": False, "name": "mine"}})
    assert not r.of_kind("ServiceAccount")
    assert r.one("Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    for binding in r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mine", "namespace": NAMESPACE}]


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_wiring_selectors_ports_and_service_account(overlay) -> None:
    _, r = overlay
    dep = r.one("Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert _matches(dep["spec"]["selector"]["matchLabels"], pod_labels)
    svc = r.one("Service")
    assert _matches(svc["spec"]["selector"], pod_labels)
    port_names = {p["name"] for p in r.container()["ports"]}
    assert all(p["targetPort"] in port_names for p in svc["spec"]["ports"])
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert [o["metadata"]["name"] for o in r.of_kind("ServiceAccount")] == [sa]
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in r.of_kind("Role") + r.of_kind("ClusterRole")}
    bindings = r.of_kind("RoleBinding") + r.of_kind("ClusterRoleBinding")
    assert len(bindings) == len(roles)
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
        ns = b["metadata"].get("namespace") if b["roleRef"]["kind"] == "Role" else None
        assert (b["roleRef"]["kind"], ns, b["roleRef"]["name"]) in roles
    for pdb in r.of_kind("PodDisruptionBudget"):
        assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    for np in r.of_kind("NetworkPolicy"):
        assert _matches(np["spec"]["podSelector"]["matchLabels"], pod_labels)


def test_monitors_scrape_the_metrics_port() -> None:
    r = render(FULL)
    svc = r.one("Service")
    sm = r.one("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert _matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert ep["path"] == "/metrics" and ep["interval"] == "30s" and ep["scrapeTimeout"] == "10s"
    assert ep["relabelings"] == FULL["serviceMonitor"]["relabelings"]
    assert ep["metricRelabelings"] == FULL["serviceMonitor"]["metricRelabelings"]
    pm = r.one("PodMonitor")
    pod_labels = r.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert _matches(pm["spec"]["selector"]["matchLabels"], pod_labels)
    (pep,) = pm["spec"]["podMetricsEndpoints"]
    assert pep["port"] in {p["name"] for p in r.container()["ports"]}
    assert pep["path"] == "/metrics"


def test_pdb_and_network_policy() -> None:
    r = render(FULL)
    assert r.one("PodDisruptionBudget")["spec"]["minAvailable"] == 1
    pdb = render({"podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}}).one("PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == "50%" and "minAvailable" not in pdb["spec"]
    np = r.one("NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["ingress"] == [
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": FULL["networkPolicy"]["metricsFrom"]}
    ]
    egress = np["spec"]["egress"]
    assert {"port": 53, "protocol": "UDP"} in egress[0]["ports"]
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}]
    assert egress[2]["to"] == FULL["networkPolicy"]["egress"]["prometheusTo"]
    assert egress[3] == FULL["networkPolicy"]["egress"]["extra"][0]
    ingress_only = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")
    assert ingress_only["spec"]["policyTypes"] == ["Ingress"] and "egress" not in ingress_only["spec"]


def test_dashboard_configmap() -> None:
    r = render(FULL)
    cm = r.one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["team"] == "platform"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Foresight"}
    shipped = (CHART / "dashboards" / "foresight.json").read_text()
    assert cm["data"]["foresight.json"].strip() == shipped.strip()
    # A user label cannot knock out the one label the Grafana sidecar looks for.
    cm = render({"dashboard": {"enabled": True, "labels": {"grafana_dashboard": "0"}}}).one("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE


def test_notes_tell_the_next_steps() -> None:
    notes = render().notes
    for text in ("examples/policies", "kubectl get sp", "kubectl describe sp", "dashboard.enabled=true",
                 "kubectl apply --server-side -f charts/foresight/crds/", "prometheus.address is empty"):
        assert text in notes, text
    notes = render(FULL).notes
    assert "monitoring/fs-foresight-dashboard" in notes
    assert "prometheus.address is empty" not in notes
    assert "kubectl apply -n team-a" in render(OVERLAYS["namespaced"]).notes


def _pod_spec(values: dict | None = None) -> dict:
    return render(values).one("Deployment")["spec"]["template"]["spec"]


def test_several_replicas_are_spread_over_nodes_by_default() -> None:
    """Two controller pods on one node: a node failure takes the leader and its standby down
    together. With replicaCount > 1 the chart prefers different nodes unless told otherwise."""
    selector = render().one("Deployment")["spec"]["selector"]["matchLabels"]
    (soft,) = _pod_spec()["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert soft["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    assert soft["weight"] == 100
    (hard,) = _pod_spec({"podAntiAffinityPreset": "hard"})["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert hard == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    # One replica has nothing to spread; "" turns the default off.
    assert "affinity" not in _pod_spec(OVERLAYS["single-no-leader-election"])
    assert "affinity" not in _pod_spec({"podAntiAffinityPreset": ""})
    # The user's own podAntiAffinity wins, and other affinity they set is kept next to the default.
    assert _pod_spec(FULL)["affinity"] == FULL["affinity"]
    node = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}
    both = _pod_spec({"affinity": {"nodeAffinity": node}})["affinity"]
    assert both["nodeAffinity"] == node and "preferredDuringSchedulingIgnoredDuringExecution" in both["podAntiAffinity"]
    with pytest.raises(helm.HelmValuesError):
        render({"podAntiAffinityPreset": "always"})
