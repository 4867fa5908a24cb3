"""The chart ships exactly the CRD the controller generates, and its RBAC names match it."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate.utils as kv
import yaml

from conftest import CHART, REPO
from test_rbac import POLICY_RULES

GENERATED = REPO / "crds" / "scalingpolicy.yaml"
SHIPPED = CHART / "crds" / "scalingpolicy.yaml"
HOW_TO_FIX = (
    "run `cargo run -- crdgen > crds/scalingpolicy.yaml` and copy it: "
    "`cp crds/scalingpolicy.yaml charts/foresight/crds/scalingpolicy.yaml`"
)


def _generated_crd() -> dict:
    assert GENERATED.is_file(), f"{GENERATED.relative_to(REPO)} is missing: {HOW_TO_FIX}"
    (crd,) = [d for d in yaml.safe_load_all(GENERATED.read_text()) if d]
    return crd


def test_chart_crd_is_byte_identical_to_the_generated_crd() -> None:
    _generated_crd()
    assert SHIPPED.is_file(), f"{SHIPPED.relative_to(REPO)} is missing: {HOW_TO_FIX}"
    assert SHIPPED.read_bytes() == GENERATED.read_bytes(), (
        f"{SHIPPED.relative_to(REPO)} differs from {GENERATED.relative_to(REPO)}: {HOW_TO_FIX}"
    )


def test_helm_loads_the_crd_and_it_is_valid() -> None:
    crd = _generated_crd()
    with helm.Chart.load(str(CHART)) as chart:
        names = [c["filename"] for c in chart.crds]
    assert names == ["foresight/crds/scalingpolicy.yaml"], names
    for version in ("1.31.0", kv.latest_version()):
        kv.validate(crd, version, strict=True)


def test_crd_names_match_what_rbac_grants() -> None:
    crd = _generated_crd()
    spec = crd["spec"]
    assert spec["group"] == "autoscaling.foresight.dev"
    assert spec["names"]["plural"] == "scalingpolicies"
    assert spec["names"]["kind"] == "ScalingPolicy"
    assert "sp" in spec["names"].get("shortNames", [])
    assert spec["scope"] == "Namespaced"
    (served,) = [v for v in spec["versions"] if v["name"] == "v1alpha1"]
    assert served["served"] and served["storage"]
    # A ScalingPolicy has a status subresource; it is not itself scalable.
    assert set(served["subresources"]) == {"status"}
    granted = {(g, r) for g, r, _, _ in POLICY_RULES if g == spec["group"]}
    assert granted == {(spec["group"], spec["names"]["plural"]), (spec["group"], spec["names"]["plural"] + "/status")}
