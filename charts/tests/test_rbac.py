"""RBAC grants exactly what the controller needs, in the right scope, in every install mode."""

from __future__ import annotations

from typing import Any

from conftest import NAMESPACE, OVERLAYS, Rendered, render

# (apiGroup, resource, verb, resourceName or None): one permission each.
POLICY_RULES = {
    *(("autoscaling.foresight.dev", "scalingpolicies", v, None) for v in ("get", "list", "watch")),
    *(("autoscaling.foresight.dev", "scalingpolicies/status", v, None) for v in ("get", "patch", "update")),
    *(
        ("apps", f"{r}/scale", v, None)
        for r in ("deployments", "statefulsets", "replicasets")
        for v in ("get", "patch", "update")
    ),
    *((g, "events", v, None) for g in ("events.k8s.io", "") for v in ("create", "patch")),
    # Other autoscalers of a policy's target, read only (conflict detection).
    *(("autoscaling", "horizontalpodautoscalers", v, None) for v in ("get", "list", "watch")),
    *(("keda.sh", "scaledobjects", v, None) for v in ("get", "list", "watch")),
}
SECRETS = {("", "secrets", "get", None)}


def lease_rules(lease: str) -> set:
    return {("coordination.k8s.io", "leases", "create", None)} | {
        ("coordination.k8s.io", "leases", v, lease) for v in ("get", "update", "patch")
    }


def permissions(role: dict[str, Any]) -> set:
    """Flatten a Role's rules into single permissions, so that how rules are grouped does not matter."""
    out = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    for n in rule.get("resourceNames") or [None]:
                        out.add((g, r, v, n))
    return out


def roles_by_scope(r: Rendered) -> dict[str | None, set]:
    """Permissions per namespace; None is cluster-wide."""
    scopes: dict[str | None, set] = {}
    for role in r.of_kind("ClusterRole"):
        scopes.setdefault(None, set()).update(permissions(role))
    for role in r.of_kind("Role"):
        scopes.setdefault(role["metadata"]["namespace"], set()).update(permissions(role))
    return scopes


LEASE = "fs-foresight-leader"


def test_cluster_mode() -> None:
    assert roles_by_scope(render()) == {None: POLICY_RULES, NAMESPACE: lease_rules(LEASE)}


def test_cluster_mode_with_auth_reads_secrets() -> None:
    assert roles_by_scope(render(OVERLAYS["auth"])) == {None: POLICY_RULES | SECRETS, NAMESPACE: lease_rules(LEASE)}


def test_namespaced_mode_has_no_cluster_role() -> None:
    r = render(OVERLAYS["namespaced"])
    assert not r.of_kind("ClusterRole") and not r.of_kind("ClusterRoleBinding")
    assert roles_by_scope(r) == {
        "team-a": POLICY_RULES,
        "team-b": POLICY_RULES,
        NAMESPACE: lease_rules(LEASE),
    }


def test_namespaced_mode_with_auth_reads_secrets_only_in_watched_namespaces() -> None:
    assert roles_by_scope(render(OVERLAYS["namespaced-auth"])) == {
        "team-a": POLICY_RULES | SECRETS,
        "team-b": POLICY_RULES | SECRETS,
        NAMESPACE: lease_rules(LEASE),
    }


def test_watching_the_release_namespace_merges_scopes_but_not_rules() -> None:
    r = render({"watchNamespaces": [NAMESPACE]})
    assert roles_by_scope(r) == {NAMESPACE: POLICY_RULES | lease_rules(LEASE)}
    assert len(r.of_kind("Role")) == 2  # the policy Role and the leader-election Role stay separate


def test_extra_scale_targets() -> None:
    r = render({"rbac": {"extraScaleTargets": [
        {"apiGroup": "argoproj.io", "resource": "rollouts"},
        {"apiGroup": "", "resource": "replicationcontrollers"},
    ]}})
    extra = {("argoproj.io", "rollouts/scale", v, None) for v in ("get", "patch", "update")} | {
        ("", "replicationcontrollers/scale", v, None) for v in ("get", "patch", "update")
    }
    assert roles_by_scope(r)[None] == POLICY_RULES | extra


def test_lease_role_follows_lease_name() -> None:
    r = render({"controller": {"leaderElection": {"leaseName": "my-lease"}}})
    assert roles_by_scope(r)[NAMESPACE] == lease_rules("my-lease")
    assert "--lease-name=my-lease" in r.container()["args"]


def test_no_lease_rights_without_leader_election() -> None:
    r = render(OVERLAYS["single-no-leader-election"])
    assert roles_by_scope(r) == {None: POLICY_RULES}


def test_secrets_only_with_auth(overlay) -> None:
    name, r = overlay
    auth = OVERLAYS[name].get("prometheus", {}).get("auth", {}).get("enabled", False)
    grants_secrets = any(p[1] == "secrets" for perms in roles_by_scope(r).values() for p in perms)
    assert grants_secrets == auth


def test_rbac_create_false_renders_no_rbac() -> None:
    r = render({"rbac": {"create": False}})
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert not r.of_kind(kind)
