#!/usr/bin/env bash
# The kind suite: a real cluster, real Prometheus (kubelet/cAdvisor + kube-state-metrics), the Helm chart, and
# the same e2e scenarios the local suite runs against the fake API server. Needs docker, kind, kubectl, helm,
# cargo, and Prometheus on this machine (apt-installed when missing, as scripts/test.sh does).
# It cannot run on machines without a container engine; CI runs it from .github/workflows/e2e-kind.yml.
#
# Two loops run against the cluster:
#   1. The Helm-installed controller, the real demo app, the cluster's Prometheus (cAdvisor, kube-state-metrics):
#      the chart and the whole in-cluster path, watching only the demo namespace.
#   2. The Rust scenario suite (e2e/tests/scenarios.rs) with FORESIGHT_E2E_KUBECONFIG set: the real API server
#      (CEL, /scale, resourceVersion conflicts, watches, Leases, Events) replaces the fake one; the workload
#      simulator, a local Prometheus scraping it and the foresight processes run on this machine, as they do
#      locally, so outages, backfilled history and leader failover are under the test's control. Each scenario
#      uses its own namespace, which the installed controller does not watch.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${KIND_CLUSTER_NAME:-foresight-e2e}
PROM_CHART_VERSION=${PROM_CHART_VERSION:-27.5.1}   # prometheus-community/prometheus, includes kube-state-metrics

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind suite needs $tool" >&2; exit 2; }
done

cleanup() { [ "${KEEP_CLUSTER:-}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --config e2e/kind/kind-config.yaml --wait 120s
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

echo "== images"
docker build -t foresight:e2e .
docker build -t foresight-demo-app:dev -f examples/demo-app/Dockerfile .
kind load docker-image foresight:e2e foresight-demo-app:dev --name "$CLUSTER"

echo "== Prometheus (cAdvisor via kubelet, kube-state-metrics), scraping every 5s"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm upgrade --install prometheus prometheus-community/prometheus --version "$PROM_CHART_VERSION" \
  -n monitoring --create-namespace --wait --timeout 5m \
  --set alertmanager.enabled=false --set prometheus-pushgateway.enabled=false \
  --set prometheus-node-exporter.enabled=false \
  --set server.global.scrape_interval=5s --set server.persistentVolume.enabled=false

echo "== Foresight (watching the demo namespace only; the scenarios bring their own controllers)"
kubectl apply -f examples/demo/namespace.yaml
helm upgrade --install foresight charts/foresight -n foresight-system --create-namespace --wait --timeout 3m \
  --set image.repository=foresight --set image.tag=e2e --set image.pullPolicy=Never \
  --set 'watchNamespaces={foresight-demo}' \
  --set prometheus.address=http://prometheus-server.monitoring.svc:80

echo "== CEL validation on a real API server"
kubectl create namespace foresight-e2e --dry-run=client -o yaml | kubectl apply -f -
if out=$(kubectl apply -f e2e/kind/invalid-policy.yaml 2>&1); then
  echo "invalid policy was accepted: $out" >&2; exit 1
fi
grep -q "minReplicas must not be greater than maxReplicas" <<<"$out" || { echo "unexpected error: $out" >&2; exit 1; }
grep -q "scaleUpAbove must be greater than scaleDownBelow" <<<"$out" || { echo "unexpected error: $out" >&2; exit 1; }
echo "rejected as expected: $out"

echo "== closed loop on the real cluster: the demo app under a load cycle"
kubectl apply -f examples/demo/deployment.yaml -f examples/demo/service.yaml
kubectl -n foresight-demo rollout status deployment/demo-app --timeout=3m
kubectl apply -f examples/demo/policy.yaml
kubectl apply -f examples/demo/load-job.yaml

wait_for() {  # wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND...: poll until COMMAND succeeds, bounded
  local what=$1 timeout=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out waiting for $what" >&2
      kubectl -n foresight-demo get sp demo-app -o yaml >&2 || true
      kubectl -n foresight-system logs deploy/foresight --tail=50 >&2 || true
      return 1
    fi
    sleep 5
  done
}
replicas_above() { [ "$(kubectl -n foresight-demo get deploy demo-app -o jsonpath='{.spec.replicas}')" -gt "$1" ]; }
scaled_up_event() { kubectl -n foresight-demo get events.events.k8s.io --field-selector reason=ScaledUp -o name | grep -q .; }
history_recorded() { kubectl -n foresight-demo get sp demo-app -o jsonpath='{.status.history[0].policy}' | grep -q threshold/; }

wait_for "Ready=True on the policy" 120 kubectl -n foresight-demo wait sp/demo-app --for=condition=Ready --timeout=5s
wait_for "a scale-up under the load peak" 900 replicas_above 1
wait_for "a ScaledUp event" 60 scaled_up_event
wait_for "the scale in status.history" 60 history_recorded
echo "scaled up: $(kubectl -n foresight-demo get sp demo-app -o jsonpath='{.status.history[0].reason}')"
kubectl -n foresight-demo get sp

echo "== the e2e scenarios against the real API server"
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
FORESIGHT_E2E_KUBECONFIG="$KUBECONFIG" cargo test -p foresight-e2e --locked --test scenarios -- --nocapture
echo "kind suite passed"
