#!/usr/bin/env bash
# Runs every test Foresight has, installing what they need first (works on a fresh Debian machine):
#   - Debian's prometheus + promtool (real Prometheus for the metric-source, template and predictive tests),
#   - kubectl (the machine's, else Debian's kubernetes-client) for the fake-API and scenario tests,
#   - a Python venv with the Helm SDK and kubernetes-validate for the chart tests.
# Usage: scripts/test.sh            (everything)
#        scripts/test.sh --rust     (cargo tests only)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "== cargo test (workspace: unit, integration, end-to-end and doc tests; benches run with cargo bench)"
cargo test --workspace --locked

echo "== the e2e scenarios in real-cluster mode, against the fake API server as a separate process (kind rehearsal)"
bash e2e/kind/rehearse.sh

if [ "${1:-}" != "--rust" ]; then
  echo "== chart tests"
  bash charts/tests/run.sh
fi
