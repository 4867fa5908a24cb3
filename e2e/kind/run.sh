#!/usr/bin/env bash
# The kind suite: a real cluster, real Prometheus (kubelet/cAdvisor + kube-state-metrics), the Helm chart, and
# the same e2e scenarios the local suite runs against the fake API server. Needs docker, kind, kubectl, helm.
# It cannot run on machines without a container engine; CI runs it from .github/workflows/e2e-kind.yml.
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

echo "== Foresight"
helm upgrade --install foresight charts/foresight -n foresight-system --create-namespace --wait --timeout 3m \
  --set image.repository=foresight --set image.tag=e2e --set image.pullPolicy=Never \
  --set prometheus.address=http://prometheus-server.monitoring.svc:80

echo "== CEL validation on a real API server"
kubectl create namespace foresight-e2e --dry-run=client -o yaml | kubectl apply -f -
if out=$(kubectl apply -f e2e/kind/invalid-policy.yaml 2>&1); then
  echo "invalid policy was accepted: $out" >&2; exit 1
fi
grep -q "minReplicas must not be greater than maxReplicas" <<<"$out" || { echo "unexpected error: $out" >&2; exit 1; }
grep -q "scaleUpAbove must be greater than scaleDownBelow" <<<"$out" || { echo "unexpected error: $out" >&2; exit 1; }
echo "rejected as expected: $out"

echo "== scenarios against the cluster"
FORESIGHT_E2E_KUBECONFIG=$KUBECONFIG FORESIGHT_E2E_PROMETHEUS=http://127.0.0.1:9090 \
  bash -c 'kubectl -n monitoring port-forward svc/prometheus-server 9090:80 >/dev/null 2>&1 & pf=$!; \
           trap "kill $pf" EXIT; sleep 2; cargo test -p foresight-e2e --test scenarios -- --test-threads=1'
