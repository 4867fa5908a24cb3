"""Shared helpers for the chart tests: render the chart offline with the real Helm SDK and
index the rendered objects so tests can ask for "the Deployment" or "every Role".

The overlays below are the install modes the chart promises to support; every test that is
about "all modes" iterates over OVERLAYS, so adding a mode here puts it under every check.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "foresight"
RELEASE = "fs"
NAMESPACE = "foresight-system"

# Values that turn on every optional object and every pass-through knob, so that each
# template branch is rendered and validated at least once.
FULL = {
    "prometheus": {"address": "http://prometheus-operated.monitoring.svc:9090"},
    "serviceMonitor": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "scrapeTimeout": "10s",
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
        "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "go_.*"}],
    },
    "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "dashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "labels": {"team": "platform"},
        "annotations": {"grafana_folder": "Foresight"},
    },
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "egress": {
            "enabled": True,
            "apiServerCIDRs": ["10.96.0.1/32", "172.18.0.2/32"],
            "prometheusTo": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
            "extra": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
        },
    },
    "rbac": {"extraScaleTargets": [{"apiGroup": "argoproj.io", "resource": "rollouts"}]},
    "imagePullSecrets": [{"name": "regcred"}],
    "image": {"digest": "sha256:" + "a" * 64},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "foresight"}},
                    },
                }
            ]
        }
    },
    "priorityClassName": "system-cluster-critical",
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "controller": {
        "extraArgs": ["--some-future-flag=1"],
        "extraEnv": [
            {"name": "RUST_BACKTRACE", "value": "1"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
    },
    "podAnnotations": {"example.com/a": "b"},
    "podLabels": {"team": "platform"},
}

OVERLAYS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "watchNamespaces": ["team-a", "team-b"],
        "prometheus": {"address": "http://prometheus.monitoring.svc:9090"},
    },
    "full": FULL,
    "auth": {"prometheus": {"address": "https://prom.example.com", "auth": {"enabled": True}}},
    "namespaced-auth": {
        "watchNamespaces": ["team-a", "team-b"],
        "prometheus": {"auth": {"enabled": True}},
    },
    "single-no-leader-election": {"replicaCount": 1, "controller": {"leaderElection": {"enabled": False}}},
}


@dataclass
class Rendered:
    """One render of the chart: the objects, and NOTES.txt as text."""

    objects: list[dict[str, Any]]
    notes: str
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected exactly one {kind}, got {len(found)}"
        return found[0]

    def container(self) -> dict[str, Any]:
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Render like `helm install fs charts/foresight -n foresight-system`; raises HelmValuesError
    when values.schema.json rejects the values and HelmRenderError when a template fails."""
    values = copy.deepcopy(values or {})
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return Rendered(objects=objects, notes=notes, values=values)


@pytest.fixture(scope="session", params=sorted(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    """Each install mode, rendered once per test session."""
    return request.param, render(OVERLAYS[request.param])
