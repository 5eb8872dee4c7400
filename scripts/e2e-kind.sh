#!/usr/bin/env bash
# The whole migration end to end on kind, where Docker exists:
#
#   1. a kind cluster with Azure NPM (its public manifest) and the example workloads
#      (examples/aks-migration.yaml made real: every pod runs the probe agent on its ports);
#   2. the pre run:  pytest suites/ --cluster kind-netparity-e2e --phase pre   (the baseline);
#   3. the cluster deleted and made again, same name and nodes, with Cilium instead of NPM
#      (kind cannot swap the dataplane in place the way `az aks update` does);
#   4. the post run: pytest suites/ --cluster kind-netparity-e2e --phase post  (the parity report).
#
# NOT run in this project's CI: CI machines here have no Docker registry to pull kind, NPM,
# Cilium or Python images from. Run it on a workstation, or in GitHub Actions with
# docs/ci/e2e-kind.yml.
#
# Needs: docker, kind, kubectl, helm, and python3 with netparity installed (bash scripts/setup).
# Settings (environment): CLUSTER, NPM_MANIFEST, NPM_IMAGE, CILIUM_VERSION, PROBE_IMAGE,
# REPORTS, KEEP=1 (leave the last cluster running).
#
# Differences from AKS to keep in mind when reading the report: kind's node addresses are
# Docker's (not 10.224.0.0/16, so the example's node-subnet ipBlocks match nothing), kind
# has no LoadBalancer controller (LoadBalancer probes are reported as not run), and the
# Cilium here is upstream Cilium with kube-proxy replacement, not AKS's build.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-netparity-e2e}
CONTEXT="kind-${CLUSTER}"
NPM_MANIFEST=${NPM_MANIFEST:-https://raw.githubusercontent.com/Azure/azure-container-networking/master/npm/azure-npm.yaml}
NPM_IMAGE=${NPM_IMAGE:-mcr.microsoft.com/containernetworking/azure-npm:v1.5.45}
CILIUM_VERSION=${CILIUM_VERSION:-1.17.6}
PROBE_IMAGE=${PROBE_IMAGE:-python:3.12-slim}
REPORTS=${REPORTS:-reports/e2e-kind}
EXAMPLE=examples/aks-migration.yaml

WORK=$(mktemp -d)
export KUBECONFIG="${WORK}/kubeconfig" # never touches the user's kubeconfig

say() { printf '\n== %s\n' "$*" >&2; }

finish() {
  local status=$?
  if [ "${KEEP:-0}" != 1 ]; then
    kind delete cluster --name "${CLUSTER}" >/dev/null 2>&1 || true
  else
    say "KEEP=1: cluster ${CLUSTER} left running (KUBECONFIG=${KUBECONFIG})"
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "${WORK}"
  exit "${status}"
}
trap finish EXIT

for tool in docker kind kubectl helm python3; do
  command -v "${tool}" >/dev/null || { echo "e2e-kind: ${tool} is required" >&2; exit 2; }
done
python3 -c 'import netparity' 2>/dev/null || { echo "e2e-kind: run bash scripts/setup first" >&2; exit 2; }

kind_config() { # $1: true to leave the CNI (and kube-proxy) to Cilium
  cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: $1
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.0.0.0/16
$( [ "$1" = true ] && echo '  kubeProxyMode: none' )
nodes:
  - role: control-plane
  - role: worker
  - role: worker
  - role: worker
EOF
}

# The example cluster's workloads, made real: same namespaces, labels, containerPorts and
# Services; each pod runs the probe agent serving its ports; node placement mapped onto the
# kind workers in order; NetworkPolicies as they are.
workloads() {
  python3 - "${EXAMPLE}" "${CLUSTER}" "${PROBE_IMAGE}" <<'PY'
import sys
import yaml
from netparity.model.snapshot import load_snapshot

example, cluster, image = sys.argv[1:4]
snap = load_snapshot([example])
workers = [f"{cluster}-worker"] + [f"{cluster}-worker{i}" for i in range(2, len(snap.nodes) + 1)]
node_of = {n.name: workers[i] for i, n in enumerate(snap.nodes)}
agent = open("probes/agent.py", encoding="utf-8").read()
raw = {}
for doc in yaml.safe_load_all(open(example, encoding="utf-8")):
    for item in (doc.get("items") or [doc]) if doc else []:
        raw[(item.get("kind"), item["metadata"].get("namespace"), item["metadata"]["name"])] = item
out = []
for ns in snap.namespaces:
    if ns.name not in ("kube-system", "default"):
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": dict(ns.labels)}})
for ns in sorted({p.namespace for p in snap.pods}):
    out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e2e-agent", "namespace": ns}, "data": {"agent.py": agent}})
for pod in snap.pods:
    if pod.labels.get("k8s-app") == "kube-dns":
        continue  # kind runs its own CoreDNS with the same labels
    ports = {"TCP": [], "UDP": [], "SCTP": []}
    for cp in pod.ports:
        ports[str(cp.protocol)].append(str(cp.port))
    command = ["python3", "/agent/agent.py", "serve", "--name", pod.key]
    for proto, numbers in ports.items():
        if numbers:
            command += [f"--{proto.lower()}", ",".join(numbers)]
    if len(command) == 5:
        command += ["--tcp", "8080"]
    spec = {
        "nodeName": node_of.get(pod.node_name or "", workers[0]),
        "containers": [{
            "name": "app",
            "image": image,
            "command": command,
            "ports": [{k: v for k, v in (("name", cp.name), ("containerPort", cp.port), ("protocol", str(cp.protocol))) if v is not None} for cp in pod.ports],
            "volumeMounts": [{"name": "agent", "mountPath": "/agent"}],
        }],
        "volumes": [{"name": "agent", "configMap": {"name": "e2e-agent"}}],
    }
    if pod.host_network:
        spec["hostNetwork"] = True
    out.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)}, "spec": spec})
for svc in snap.services:
    if svc.key == "kube-system/kube-dns":
        continue
    src = raw[("Service", svc.namespace, svc.name)]["spec"]
    spec = {k: v for k, v in src.items() if k in ("type", "selector", "externalTrafficPolicy", "publishNotReadyAddresses")}
    spec["ports"] = [{k: v for k, v in p.items() if k in ("name", "port", "targetPort", "protocol", "nodePort")} for p in src.get("ports", [])]
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": raw[("Service", svc.namespace, svc.name)]["metadata"].get("labels", {})}, "spec": spec})
for (kind, ns, name), item in sorted(raw.items(), key=lambda kv: str(kv[0])):
    if kind == "NetworkPolicy":
        out.append({"apiVersion": item["apiVersion"], "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": item["spec"]})
yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": out}, sys.stdout, sort_keys=False)
PY
}

make_cluster() { # $1: npm | cilium
  say "kind cluster ${CLUSTER} with $1"
  kind delete cluster --name "${CLUSTER}" >/dev/null 2>&1 || true
  kind_config "$([ "$1" = cilium ] && echo true || echo false)" >"${WORK}/kind.yaml"
  kind create cluster --name "${CLUSTER}" --config "${WORK}/kind.yaml" --wait 120s
  docker pull -q "${PROBE_IMAGE}" >/dev/null && kind load docker-image "${PROBE_IMAGE}" --name "${CLUSTER}"
  if [ "$1" = npm ]; then
    kubectl apply -f "${NPM_MANIFEST}"
    kubectl -n kube-system set image daemonset/azure-npm "azure-npm=${NPM_IMAGE}"
    kubectl -n kube-system rollout status daemonset/azure-npm --timeout=300s
  else
    helm repo add cilium https://helm.cilium.io >/dev/null 2>&1 || true
    helm repo update cilium >/dev/null
    helm install cilium cilium/cilium --version "${CILIUM_VERSION}" --namespace kube-system \
      --set kubeProxyReplacement=true \
      --set k8sServiceHost="${CLUSTER}-control-plane" --set k8sServicePort=6443 \
      --set ipam.mode=kubernetes --set operator.replicas=1 --wait --timeout 10m
    kubectl wait --for=condition=Ready nodes --all --timeout=300s
  fi
  say "example workloads"
  workloads >"${WORK}/workloads.yaml"
  kubectl apply -f "${WORK}/workloads.yaml"
  kubectl wait --for=condition=Ready pods --all --all-namespaces --timeout=300s
}

suites() { # $1: pre | post
  say "netparity $1 run"
  python3 -m pytest suites/ --cluster "${CONTEXT}" --phase "$1" --report-dir "${REPORTS}" \
    --probe-timeout 3 -p no:cacheprovider
}

make_cluster npm
suites pre || say "the pre run reported failures (see ${REPORTS}); going on with the migration"
kubectl apply -f probes/rbac.yaml >/dev/null # shows the RBAC manifest applies cleanly
python3 -m netparity cleanup --cluster "${CONTEXT}"

make_cluster cilium
status=0
suites post || status=$?
say "reports in ${REPORTS}: the parity report is ${REPORTS}/*/parity.md"
exit "${status}"
