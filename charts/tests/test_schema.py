"""values.schema.json turns a typo into an install-time error, and every value is documented."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

from conftest import CHART, NAMESPACE, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())

BAD_VALUES = [
    # (values, a piece of the message that points the user at the mistake)
    ({"replicaCount": "two"}, "/replicaCount"),
    ({"replicaCount": 0}, "/replicaCount"),
    ({"replicas": 2}, "replicas"),
    ({"serviceMonitor": {"enable": True}}, "enable"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"tags": "v1"}}, "tags"),
    ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    ({"rbac": {"extraScaleTargets": [{"resource": "rollouts"}]}}, "apiGroup"),
    ({"rbac": {"extraScaleTargets": [{"apiGroup": "argoproj.io", "resource": "rollouts/scale"}]}}, "/resource"),
    ({"securityContext": {"runAsUsr": 1000}}, "runAsUsr"),
    ({"controller": {"logFormat": "xml"}}, "/controller/logFormat"),
    ({"controller": {"leaderElection": {"enable": False}}}, "enable"),
    ({"prometheus": {"address": "prometheus:9090"}}, "/prometheus/address"),
    ({"prometheus": {"auth": {"enabled": "yes"}}}, "/prometheus/auth/enabled"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "/serviceMonitor/interval"),
    ({"podDisruptionBudget": {"maxUnavailable": "half"}}, "/podDisruptionBudget/maxUnavailable"),
    ({"tolerations": [{"key": "a", "operater": "Exists"}]}, "operater"),
    ({"controller": {"extraEnv": [{"value": "x"}]}}, "name"),
    ({"resources": {"request": {"cpu": "1"}}}, "request"),
]


@pytest.mark.parametrize("values,needle", BAD_VALUES, ids=[json.dumps(v) for v, _ in BAD_VALUES])
def test_bad_values_fail_rendering(values: dict[str, Any], needle: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        render(values)
    assert needle in str(err.value)


def test_bad_values_fail_lint() -> None:
    report = helm.lint(str(CHART), {"replicaCount": "two"}, strict=True, namespace=NAMESPACE)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


def test_set_style_values_still_pass() -> None:
    # What `--set replicaCount=3 --set watchNamespaces={a,b}` produces must be accepted.
    values = helm.parse_set_string("replicaCount=3,watchNamespaces={a,b},prometheus.auth.enabled=true")
    assert render(values).one("Deployment")["spec"]["replicas"] == 3


def _object_nodes(node: Any, path: str = "#") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _object_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for n, child in enumerate(node):
            yield from _object_nodes(child, f"{path}/{n}")


def test_every_object_with_known_fields_rejects_unknown_ones() -> None:
    nodes = list(_object_nodes(SCHEMA))
    assert len(nodes) > 40
    loose = [path for path, node in nodes if "properties" in node and node.get("additionalProperties") is not False]
    assert not loose, f"these schema objects accept unknown keys: {loose}"
    assert SCHEMA["additionalProperties"] is False


def test_every_schema_property_is_described() -> None:
    missing = []
    for path, node in _object_nodes(SCHEMA):
        for key, prop in node.get("properties", {}).items():
            if "description" not in prop:
                missing.append(f"{path}/properties/{key}")
    assert not missing, missing


def test_every_value_is_documented_in_values_yaml() -> None:
    """Each key in values.yaml has a `# --` comment right above it (blank lines not allowed between)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9_]*):", line)
        if not m:
            continue
        above = n - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above < 0 or not lines[above].strip().startswith("# --"):
            undocumented.append(f"line {n + 1}: {line.strip()}")
    assert not undocumented, undocumented


def test_values_yaml_and_schema_agree_on_defaults() -> None:
    """Every default in values.yaml is a key the schema knows (the schema would reject it at
    install otherwise), and every schema property has a default in values.yaml."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    render(defaults)  # a default the schema rejects would fail here

    def walk(schema: dict, values: dict, path: str) -> list[str]:
        missing = []
        for key, prop in schema.get("properties", {}).items():
            if key == "global":
                continue
            if key not in values:
                missing.append(f"{path}.{key}")
                continue
            target = prop
            if "$ref" in prop:
                target = SCHEMA["definitions"][prop["$ref"].split("/")[-1]]
            if target.get("type") == "object" and "properties" in target and isinstance(values[key], dict):
                missing += walk(target, values[key], f"{path}.{key}")
        return missing

    missing = walk(SCHEMA, defaults, "")
    # Optional Kubernetes fields the schema knows but the chart leaves unset by default.
    optional = {
        ".podSecurityContext.", ".securityContext.", ".resources.claims", ".resources.requests.",
        ".resources.limits.", ".affinity.",
    }
    missing = [m for m in missing if not any(m.startswith(o) for o in optional)]
    assert not missing, f"schema properties with no default in values.yaml: {missing}"
