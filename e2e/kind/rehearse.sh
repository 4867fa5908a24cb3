#!/usr/bin/env bash
# Rehearses the kind suite's scenario step where no cluster can run: the e2e scenarios in their real-cluster
# mode (FORESIGHT_E2E_KUBECONFIG set) against the fake API server started as a separate process, with the
# workload controllers simulated (Deployment status follows spec), as a real cluster's would be.
#
# What this exercises that the default (in-process fake) run does not: the harness's cluster path, where the
# CRD comes from crds/ (installed with kubectl, as the chart installs it on kind) rather than from the harness,
# the simulator writes no Pods or Deployment status, and each scenario's namespace is deleted with kubectl
# afterwards. What only kind shows (a real kube-apiserver, the chart in the cluster) stays in run.sh.
# Needs kubectl and Prometheus (scripts/test.sh installs Prometheus first).
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=$(mktemp -d)
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cargo build --locked -q -p foresight-e2e --bin fake-apiserver
bin="${CARGO_TARGET_DIR:-target}/debug/fake-apiserver"
"$bin" --kubeconfig "$dir/kubeconfig" --simulate-workloads > "$dir/api.log" 2>&1 &
api_pid=$!
for _ in $(seq 1 100); do
  grep -q "listening" "$dir/api.log" && break
  kill -0 "$api_pid" 2>/dev/null || { cat "$dir/api.log" >&2; exit 1; }
  sleep 0.1
done
grep -q "listening" "$dir/api.log" || { echo "fake API server did not start" >&2; cat "$dir/api.log" >&2; exit 1; }
cat "$dir/api.log"

kubectl --kubeconfig "$dir/kubeconfig" create --validate=false -f crds/scalingpolicy.yaml
FORESIGHT_E2E_KUBECONFIG="$dir/kubeconfig" cargo test --locked -p foresight-e2e --test scenarios

# Every scenario cleaned up after itself, as it must on a cluster that outlives the run.
left=$(kubectl --kubeconfig "$dir/kubeconfig" get namespaces -o name | grep -v -E '^namespace/(default|kube-system|kube-public|kube-node-lease)$' || true)
if [ -n "$left" ]; then
  echo "scenario namespaces left behind on the cluster: $left" >&2
  exit 1
fi
echo "cluster-mode rehearsal passed"
