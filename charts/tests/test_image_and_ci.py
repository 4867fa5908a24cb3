"""The image the chart runs and the CI workflows agree with the chart. No container engine or
GitHub runner exists here, so these read the files; the image build itself runs elsewhere."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

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


def _release() -> tuple[dict, list[dict]]:
    wf = _workflow("release.yml")
    return wf, _steps(wf)


def _step(steps: list[dict], name: str) -> tuple[int, dict]:
    (found,) = [(i, s) for i, s in enumerate(steps) if s.get("name") == name]
    return found


def _version_step(tag: str, cwd) -> subprocess.CompletedProcess:
    """Runs the workflow's own "Version from the tag" script as GitHub would for `tag`."""
    _, steps = _release()
    _, step = _step(steps, "Version from the tag")
    out = cwd / "github_output"
    out.write_text("")
    env = {"PATH": os.environ["PATH"], "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(out)}
    return subprocess.run(["bash", "-c", step["run"]], cwd=cwd, env=env, capture_output=True, text=True)


def test_release_runs_on_version_tags_and_may_push_packages() -> None:
    wf, _ = _release()
    assert wf["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert wf["permissions"] == {"contents": "read", "packages": "write"}


def test_release_version_comes_from_the_tag_and_must_match_the_crate(tmp_path) -> None:
    crate = re.search(r'\nversion = "([^"]+)"', (REPO / "Cargo.toml").read_text()).group(1)
    (tmp_path / "Cargo.toml").write_text((REPO / "Cargo.toml").read_text())
    ok = _version_step(f"v{crate}", tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "github_output").read_text() == f"version={crate}\n"
    # A tag that is not v<semver>, or that disagrees with Cargo.toml, stops the release with a reason.
    for bad, why in [("v99.0.0", "does not match the crate version"), (crate, "is not v<semver>"),
                     ("v1.2", "is not v<semver>")]:
        r = _version_step(bad, tmp_path)
        assert r.returncode != 0 and why in r.stdout, (bad, r.stdout, r.stderr)
        assert (tmp_path / "github_output").read_text() == ""
    (tmp_path / "Cargo.toml").write_text('[workspace.package]\nversion = "0.3.0-rc.1"\n')
    assert _version_step("v0.3.0-rc.1", tmp_path).returncode == 0
    assert (tmp_path / "github_output").read_text() == "version=0.3.0-rc.1\n"


def test_release_pushes_the_image_the_chart_runs_before_the_chart() -> None:
    wf, steps = _release()
    version = "${{ steps.version.outputs.version }}"
    values = yaml.safe_load((REPO / "charts" / "foresight" / "values.yaml").read_text())
    assert wf["env"]["IMAGE"] == values["image"]["repository"]
    (image_at, image), = [(i, s) for i, s in enumerate(steps) if s.get("uses", "").startswith("docker/build-push-action@")]
    assert image["with"]["push"] is True and image["with"]["context"] == "."
    assert image["with"]["tags"] == "${{ env.IMAGE }}:" + version
    login = [s for s in steps if s.get("uses", "").startswith("docker/login-action@")]
    assert [s["with"]["registry"] for s in login] == ["ghcr.io"]
    # The packaged chart's version and appVersion are the tag's, so its default image is the one pushed above.
    _, package = _step(steps, "Package the chart")
    words = shlex.split(package["run"])
    assert words[:3] == ["helm", "package", "charts/foresight"]
    assert words[words.index("--version") + 1] == version
    assert words[words.index("--app-version") + 1] == version
    helpers = (REPO / "charts" / "foresight" / "templates" / "_helpers.tpl").read_text()
    assert "default .Chart.AppVersion .Values.image.tag" in helpers, "the default image tag must be the chart's appVersion"
    push_at, push = _step(steps, "Push the chart")
    assert "helm registry login ghcr.io" in push["run"]
    assert f'helm push "dist/foresight-{version}.tgz" "$CHART_REPOSITORY"' in push["run"]
    assert wf["env"]["CHART_REPOSITORY"].startswith("oci://ghcr.io/")
    assert image_at < push_at, "a published chart must never point at an image that is not there yet"


def test_install_docs_name_what_the_release_publishes() -> None:
    wf, _ = _release()
    install = f"helm install foresight {wf['env']['CHART_REPOSITORY']}/foresight"
    for doc in (REPO / "README.md", REPO / "docs" / "install.md"):
        text = doc.read_text()
        assert install in text, f"{doc.name} does not show `{install}`"
        assert wf["env"]["IMAGE"] in text, f"{doc.name} does not say where the image is"
