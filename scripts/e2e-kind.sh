#!/usr/bin/env bash
# The whole migration end to end on kind, where Docker exists:
#
#   1. a kind cluster whose CNI enforces no policy (flannel; kind's default kindnetd enforces
#      NetworkPolicy itself since kind 0.24, so it is disabled) with Azure NPM (its manifest
#      pinned to a release) and the example workloads (examples/aks-migration.yaml made
#      real: every pod runs the probe agent on its ports; headless Services stay headless);
#   2. the narrowed RBAC (probes/rbac.yaml, then `netparity rbac` for the plan's namespaces)
#      and a kubeconfig of the netparity ServiceAccount: every run below uses only that;
#   3. the pre run:  pytest suites/ --cluster kind-netparity-e2e --phase pre   (the baseline);
#   4. the cluster deleted and made again, same name and nodes, with Cilium instead of NPM
#      (kind cannot swap the dataplane in place the way `az aks update` does);
#   5. the post run: pytest suites/ --cluster kind-netparity-e2e --phase post  (the parity report),
#      then a check that every baseline probe id was found again on the new pod IPs.
#
# NOT run in this project's CI: CI machines here have no Docker registry to pull kind, NPM,
# Cilium or Python images from. Run it on a workstation, or in GitHub Actions with
# docs/ci/e2e-kind.yml.
#
# Needs: docker, kind, kubectl, helm, and python3 with netparity installed (bash scripts/setup).
# Settings (environment): CLUSTER, NPM_REF (a release tag of Azure/azure-container-networking:
# the manifest and the image of that release), NPM_MANIFEST, NPM_IMAGE, FLANNEL_VERSION,
# CNI_PLUGINS_VERSION, CILIUM_VERSION, PROBE_IMAGE, REPORTS, KEEP=1 (leave the last cluster
# running).
#
# Checked in this project's CI on paper only (tests/test_ci_docs.py): `bash -n` and
# ShellCheck on this script and on every script step of docs/ci/*.yml.
#
# Differences from AKS to keep in mind when reading the report: kind's node addresses are
# Docker's (not 10.224.0.0/16, so the example's node-subnet ipBlocks match nothing), kind
# has no LoadBalancer controller (LoadBalancer probes are reported as not run), and the
# Cilium here is upstream Cilium with kube-proxy replacement, not AKS's build.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-netparity-e2e}
CONTEXT="kind-${CLUSTER}"
NPM_REF=${NPM_REF:-v1.5.45}
NPM_MANIFEST=${NPM_MANIFEST:-https://raw.githubusercontent.com/Azure/azure-container-networking/${NPM_REF}/npm/azure-npm.yaml}
NPM_IMAGE=${NPM_IMAGE:-mcr.microsoft.com/containernetworking/azure-npm:${NPM_REF}}
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.26.4}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.6.2}
CILIUM_VERSION=${CILIUM_VERSION:-1.17.6}
PROBE_IMAGE=${PROBE_IMAGE:-python:3.12-slim}
REPORTS=${REPORTS:-reports/e2e-kind}
EXAMPLE=examples/aks-migration.yaml

WORK=$(mktemp -d)
ADMIN_KUBECONFIG="${WORK}/kubeconfig" # kind's admin: builds the cluster, never runs the suites
RUN_KUBECONFIG="${WORK}/netparity.kubeconfig" # the netparity ServiceAccount: runs the suites
export KUBECONFIG="${ADMIN_KUBECONFIG}" # never touches the user's kubeconfig

say() { printf '\n== %s\n' "$*" >&2; }

# shellcheck disable=SC2317 # run by the EXIT trap, which ShellCheck 0.9 does not follow
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

for tool in docker kind kubectl helm python3 curl tar; do
  command -v "${tool}" >/dev/null || { echo "e2e-kind: ${tool} is required" >&2; exit 2; }
done
python3 -c 'import netparity' 2>/dev/null || { echo "e2e-kind: run bash scripts/setup first" >&2; exit 2; }

kind_config() { # $1: npm (kube-proxy iptables, as on AKS with NPM) | cilium (no kube-proxy)
  # kindnetd, kind's default CNI, enforces NetworkPolicy itself (kind 0.24+): never install it.
  cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  disableDefaultCNI: true
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.0.0.0/16
$( [ "$1" = cilium ] && echo '  kubeProxyMode: none' )
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
    if src.get("clusterIP") == "None":
        spec["clusterIP"] = "None"  # headless stays headless (no ClusterIP, no kube-proxy rules)
    spec["ports"] = [{k: v for k, v in p.items() if k in ("name", "port", "targetPort", "protocol", "nodePort")} for p in src.get("ports", [])]
    out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": raw[("Service", svc.namespace, svc.name)]["metadata"].get("labels", {})}, "spec": spec})
for (kind, ns, name), item in sorted(raw.items(), key=lambda kv: str(kv[0])):
    if kind == "NetworkPolicy":
        out.append({"apiVersion": item["apiVersion"], "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": item["spec"]})
yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": out}, sys.stdout, sort_keys=False)
PY
}

# flannel: pod networking without any policy enforcement, so that NPM alone enforces.
# Its CNI config delegates to the `bridge` plugin, which kind's node image does not carry.
install_flannel() {
  local node
  mkdir -p "${WORK}/cni"
  curl -fsSL "https://github.com/containernetworking/plugins/releases/download/${CNI_PLUGINS_VERSION}/cni-plugins-linux-amd64-${CNI_PLUGINS_VERSION}.tgz" \
    | tar -xz -C "${WORK}/cni" ./bridge ./host-local ./portmap ./loopback
  for node in $(kind get nodes --name "${CLUSTER}"); do
    for plugin in bridge host-local portmap loopback; do
      docker cp "${WORK}/cni/${plugin}" "${node}:/opt/cni/bin/${plugin}"
    done
  done
  kubectl apply -f "https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}/kube-flannel.yml"
  kubectl -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout=300s
  kubectl wait --for=condition=Ready nodes --all --timeout=300s
}

make_cluster() { # $1: npm | cilium
  say "kind cluster ${CLUSTER} with $1"
  kind delete cluster --name "${CLUSTER}" >/dev/null 2>&1 || true
  kind_config "$1" >"${WORK}/kind.yaml"
  # no --wait: without a CNI the nodes stay NotReady until flannel or Cilium is in
  kind create cluster --name "${CLUSTER}" --config "${WORK}/kind.yaml"
  docker pull -q "${PROBE_IMAGE}" >/dev/null && kind load docker-image "${PROBE_IMAGE}" --name "${CLUSTER}"
  if [ "$1" = npm ]; then
    install_flannel
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

# The narrowed RBAC, applied with the admin kubeconfig, and a kubeconfig of the netparity
# ServiceAccount (same cluster, same context name, so records and reports match) that the
# suites and the cleanup use: a verb the code needs and the RBAC lacks fails the run here.
service_account_kubeconfig() {
  local server ca token
  say "RBAC: probes/rbac.yaml and the Roles for the plan's namespaces"
  kubectl apply -f probes/rbac.yaml
  python3 -m netparity rbac --cluster "${CONTEXT}" --current npm -o "${WORK}/rbac-roles.yaml"
  kubectl apply -f "${WORK}/rbac-roles.yaml"
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kubectl -n netparity create token netparity --duration=2h)
  printf '%s' "${ca}" | base64 -d >"${WORK}/ca.crt"
  rm -f "${RUN_KUBECONFIG}"
  KUBECONFIG="${RUN_KUBECONFIG}" kubectl config set-cluster "${CONTEXT}" --server="${server}" \
    --certificate-authority="${WORK}/ca.crt" --embed-certs=true >/dev/null
  KUBECONFIG="${RUN_KUBECONFIG}" kubectl config set-credentials netparity --token="${token}" >/dev/null
  KUBECONFIG="${RUN_KUBECONFIG}" kubectl config set-context "${CONTEXT}" --cluster="${CONTEXT}" \
    --user=netparity >/dev/null
  KUBECONFIG="${RUN_KUBECONFIG}" kubectl config use-context "${CONTEXT}" >/dev/null
  # the ServiceAccount may not create pods in a namespace the plan does not need
  if KUBECONFIG="${RUN_KUBECONFIG}" kubectl auth can-i create pods -n netparity >/dev/null 2>&1; then
    echo "e2e-kind: the netparity ServiceAccount may create pods where no plan needs them" >&2
    exit 1
  fi
}

suites() { # $1: pre | post
  say "netparity $1 run (as the netparity ServiceAccount)"
  KUBECONFIG="${RUN_KUBECONFIG}" python3 -m pytest suites/ --cluster "${CONTEXT}" --phase "$1" \
    --report-dir "${REPORTS}" --probe-timeout 3 -p no:cacheprovider
}

# Probe ids name what a probe means, never a pod IP: every baseline probe must be found in
# the post record although every pod has a new IP on the new cluster.
check_ids_survive() {
  python3 - "${REPORTS}" <<'PY'
import json
import sys
from pathlib import Path

folder = next(Path(sys.argv[1]).glob("*/baseline.json")).parent
base = {p["id"] for p in json.loads((folder / "baseline.json").read_text())["probes"]}
post = {p["id"] for p in json.loads(sorted(folder.glob("record-post-*.json"))[-1].read_text())["probes"]}
lost = sorted(base - post)
print(f"e2e-kind: {len(base)} baseline probe ids, {len(base) - len(lost)} found again after the move")
if lost:
    print("e2e-kind: probe ids that did not survive the new pod IPs: " + ", ".join(lost[:20]))
    sys.exit(1)
PY
}

make_cluster npm
service_account_kubeconfig
suites pre || say "the pre run reported failures (see ${REPORTS}); going on with the migration"
KUBECONFIG="${RUN_KUBECONFIG}" python3 -m netparity cleanup --cluster "${CONTEXT}"

make_cluster cilium
service_account_kubeconfig
status=0
suites post || status=$?
check_ids_survive || status=1
say "reports in ${REPORTS}: the parity report is ${REPORTS}/*/parity.md"
exit "${status}"
