"""The image the chart runs and the CI workflows agree with the chart. No container engine or
GitHub runner exists here, so these read the files; the image build itself runs elsewhere."""

from __future__ import annotations

import json
import re

import yaml

from conftest import REPO, render

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_a_static_binary_on_distroless() -> None:
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms[0].startswith("rust:1-bookworm ")
    assert froms[-1] == "gcr.io/distroless/static-debian12:nonroot"
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert "musl-tools" in runs and "rustup target add x86_64-unknown-linux-musl" in runs
    assert "cargo build --release --locked --bin foresight --target x86_64-unknown-linux-musl" in runs


def test_image_user_and_entrypoint_match_the_chart() -> None:
    ins = dict((word, rest) for word, rest in _instructions() if word in ("USER", "ENTRYPOINT", "CMD"))
    assert ins["USER"] == "65532:65532"
    assert json.loads(ins["ENTRYPOINT"]) == ["/foresight"]
    assert json.loads(ins["CMD"]) == ["run"]
    r = render()
    sc = r.container()["securityContext"]
    assert f"{sc['runAsUser']}:{sc['runAsGroup']}" == ins["USER"]
    # Kubernetes `args` replace the image's CMD, so the chart must name the subcommand itself.
    assert r.container()["args"][0] == "run"
    assert "command" not in r.container()


def test_dockerignore_keeps_the_build_inputs() -> None:
    ignored = [line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for needed in ("Cargo.toml", "Cargo.lock", "controller", "e2e"):
        assert needed not in ignored
    assert "target" in ignored and ".git" in ignored


def _workflow(name: str) -> dict:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def _steps(wf: dict) -> list[dict]:
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    return job["steps"]


def test_ci_workflow_runs_the_ci_script_on_push_and_pr() -> None:
    wf = _workflow("ci.yml")
    assert set(wf["on"]) == {"push", "pull_request"}
    assert [s["run"] for s in _steps(wf) if "run" in s] == ["bash .ci/run"]


def test_e2e_workflow_installs_tools_and_runs_the_kind_script() -> None:
    wf = _workflow("e2e-kind.yml")
    assert wf["on"]["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in wf["on"]
    steps = _steps(wf)
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert {"helm/kind-action", "azure/setup-helm", "azure/setup-kubectl", "actions/checkout"} <= uses
    assert [s["run"] for s in steps if "run" in s] == ["bash e2e/kind/run.sh"]
