#!/usr/bin/env bash
# Lint, render and validate the Helm chart without a helm binary or a cluster:
# helm-python-sdk embeds the Helm v4 Go SDK, kubernetes-validate carries the API schemas offline.
# Creates (or reuses) a virtualenv at .venv/ in the repository root. Exits non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv"
# Pinned so a new release of any of them cannot change the verdict.
requirements=(
  helm-python-sdk==0.2.2
  kubernetes-validate==1.37.0
  promql-parser==0.11.0
  pytest==9.2.0
  pyyaml==6.0.3
)

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
# pip is quick when everything is already installed at the pinned version.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"

cd "$repo/charts/tests"
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
