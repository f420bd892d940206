#!/usr/bin/env bash
# `make demo`: build everything, start a real local mesh (two clusters, real
# etcd, mutual TLS, agents with eBPF in network namespaces) and walk through
# policy (with the flows Hubble shows for it), global-service failover and
# a control-plane outage, with the Hubble UI showing it live. Every step
# checks its outcome; the mesh is removed at the end, also on failure.
# `make demo KEEP=1` keeps the mesh (and its UI) up at the end until Enter
# or Ctrl-C, so a person can look around.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "make demo needs root (network namespaces and eBPF); run it with sudo" >&2
  exit 1
fi

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
fail() { printf '\033[31mDEMO FAILED: %s\033[0m\n' "$*" >&2; exit 1; }

bold "== Building (release)"
cargo build --release --workspace --bins

CM=target/release/clustermesh
AGENT=target/release/clustermesh-agent
DIR=$(mktemp -d /tmp/clustermesh-demo.XXXXXX)
POLICY=$(mktemp /tmp/clustermesh-demo-policy.XXXXXX.yaml)
cleanup() {
  bold "== Tearing down"
  "$CM" down --dir "$DIR" || true
  # mktemp made the directory, `down` removed only what `up` made in it.
  rmdir "$DIR" 2>/dev/null || true
  rm -f "$POLICY"
}
trap cleanup EXIT

bold "== 1. A mesh of two clusters, two nodes each"
"$CM" up --dir "$DIR" --clusters 2 --nodes 2
"$CM" status --dir "$DIR" --wait --wait-duration 90s
UI=$("$CM" ui --dir "$DIR") || fail "the mesh has no Hubble UI"
curl_ok() { python3 -c "import urllib.request,sys;sys.exit(0 if urllib.request.urlopen(sys.argv[1],timeout=5).status==200 else 1)" "$1"; }
curl_ok "${UI}healthz" || fail "the Hubble UI at $UI does not answer"
bold "   Hubble UI: $UI  (service map of both clusters, flows, global services; live)"

ip_of() { # cluster pod
  python3 -c "import json,sys;d=json.load(open('$DIR/mesh.json'));print([e['ip'] for e in d['endpoints'] if e['cluster']=='$1' and e['name']=='$2'][0])"
}
ip6_of() { # cluster pod: its IPv6 address (pods are dual-stack)
  python3 -c "import json,sys;d=json.load(open('$DIR/mesh.json'));print([e['ipv6'] for e in d['endpoints'] if e['cluster']=='$1' and e['name']=='$2'][0])"
}
request() { "$CM" mesh request --dir "$DIR" "$@"; }
denied() { ! request "$@" --timeout 1s >/dev/null 2>&1; }

ECHO2=$(ip_of c2 echo-n1):8080
ECHO2_V6="[$(ip6_of c2 echo-n1)]:8080"

bold "== 2. Policy: c2's echo servers accept clients of their own cluster only"
cat >"$POLICY" <<'EOF'
kind: CiliumNetworkPolicy
metadata: {name: echo-ingress, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: echo}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]   # no cluster label: local cluster only
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
EOF
"$CM" policy apply -f "$POLICY" --cluster c2 --dir "$DIR"
say "c1/client -> c2/echo-n1 ($ECHO2):"
for _ in $(seq 50); do denied c1/client "$ECHO2" && break; sleep 0.1; done
denied c1/client "$ECHO2" || fail "c1's client reached c2 although the policy admits c2 clients only"
say "denied: the rule names no cluster, so it admits cluster c2's clients only"
denied c1/client "$ECHO2_V6" || fail "c1's client reached c2 over IPv6 although the policy admits c2 clients only"
say "denied over IPv6 too ($ECHO2_V6): pods are dual-stack, one identity for both addresses"
bold "   Hubble: the drop, through c1's relay (which reaches every node of both clusters):"
OBS=$(for _ in $(seq 50); do
  OUT=$("$CM" observe --dir "$DIR" --cluster c1 --verdict DROPPED --to-label app=echo --last 3 --print-node-name 2>/dev/null) || true
  grep -q DROPPED <<<"$OUT" && { echo "$OUT"; break; }
  sleep 0.2
done)
[[ -n "$OBS" ]] || fail "the relay shows no drop of c1's client"
sed 's/^/   /' <<<"$OBS"
grep -q 'c2/n' <<<"$OBS" || fail "the drop should be seen on a node of c2"
"$CM" hubble nodes --dir "$DIR" --cluster c1 | sed 's/^/   /'

bold "== 3. Policy: now admit cluster c1's clients by naming the cluster"
sed -i 's/{app: client}}]   # no cluster label: local cluster only/{app: client, io.cilium.k8s.policy.cluster: c1}}]/' "$POLICY"
"$CM" policy apply -f "$POLICY" --cluster c2 --dir "$DIR"
for _ in $(seq 50); do request c1/client "$ECHO2" --timeout 1s >/dev/null 2>&1 && break; sleep 0.1; done
request c1/client "$ECHO2" || fail "c1's client is still denied"
say "allowed: c1's client identity is in the policy map of c2's echo servers"
request c1/client "$ECHO2_V6" || fail "c1's client is still denied over IPv6"
say "allowed over IPv6 as well, routed to c2's node through its IPv6 fabric address"
bold "   Hubble: the cross-cluster connection, through c2's relay:"
OBS=$(for _ in $(seq 50); do
  OUT=$("$CM" observe --dir "$DIR" --cluster c2 --verdict FORWARDED --from-label io.cilium.k8s.policy.cluster=c1 --to-label app=echo --last 3 --print-node-name 2>/dev/null) || true
  grep -q FORWARDED <<<"$OUT" && { echo "$OUT"; break; }
  sleep 0.2
done)
[[ -n "$OBS" ]] || fail "c2's relay shows no forwarded flow from c1"
sed 's/^/   /' <<<"$OBS"
EP=$("$AGENT" debug endpoints -o json --api-socket "$DIR/c2/n1/agent.sock" | python3 -c "import json,sys;print([e['id'] for e in json.load(sys.stdin) if e['name']=='c2-echo-n1'][0])")
"$AGENT" debug policy "$EP" --api-socket "$DIR/c2/n1/agent.sock" | sed 's/^/   /'

bold "   The Hubble UI's map (arrows between workloads, from $UI):"
python3 - "${UI}api/snapshot" <<'PY' || fail "the Hubble UI has no map"
import json, sys, urllib.request
snap = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))
links = snap["map"]["links"]
for l in links:
    reason = f" ({l['drop_reason']})" if l["drop_reason"] else ""
    print(f"   {l['source']} -> {l['destination']} {l['port']}/{l['protocol']}: {l['verdict']}{reason}, "
          f"{l['forwarded']} forwarded, {l['dropped']} dropped")
sys.exit(0 if any(l["dropped"] and l["source"].startswith("c1/") and l["destination"].startswith("c2/") for l in links) else 1)
PY

bold "== 4. Global service demo/echo (affinity local): answered in c1"
request c1/client 10.96.0.10:80 --count 4
"$AGENT" debug services --api-socket "$DIR/c1/n1/agent.sock" | sed 's/^/   /'

bold "== 5. c1's echo servers go away: the service fails over to c2"
"$CM" mesh remove-workload c1 echo-n1 --dir "$DIR"
"$CM" mesh remove-workload c1 echo-n2 --dir "$DIR"
for _ in $(seq 50); do request c1/client 10.96.0.10:80 --timeout 1s 2>/dev/null | grep -q 'by c2/' && break; sleep 0.1; done
OUT=$(request c1/client 10.96.0.10:80 --count 4)
echo "$OUT"
grep -q 'by c1/' <<<"$OUT" && fail "answered by c1 although it has no backends"
"$AGENT" debug services --api-socket "$DIR/c1/n1/agent.sock" | sed 's/^/   /'

bold "== 6. c1's echo server comes back: traffic returns to c1"
"$CM" mesh add-workload c1 n1 echo-n1 --label app=echo --port 8080 --dir "$DIR"
for _ in $(seq 50); do request c1/client 10.96.0.10:80 --timeout 1s 2>/dev/null | grep -q 'by c1/' && break; sleep 0.1; done
OUT=$(request c1/client 10.96.0.10:80 --count 4)
echo "$OUT"
grep -q 'by c2/' <<<"$OUT" && fail "still answered by c2 although c1 has a backend again"

bold "== 7. c2's etcd stops: existing traffic keeps flowing"
"$CM" mesh stop etcd c2 --dir "$DIR"
request c1/client "$ECHO2" --count 3 || fail "traffic to c2 stopped with its etcd"
say "c1 keeps c2's last known state; the datapath does not depend on etcd"
bold "   status shows why c2 is degraded:"
for _ in $(seq 100); do "$CM" status --dir "$DIR" | grep -q 'remote c2: NOT READY' && break; sleep 0.2; done
"$CM" status --dir "$DIR" | sed 's/^/   /'

bold "== 8. c2's etcd is back: everything is ready again"
"$CM" mesh start etcd c2 --dir "$DIR"
"$CM" status --dir "$DIR" --wait --wait-duration 90s | tail -1 | sed 's/^/   /'

bold "== Demo complete: policy across clusters, graded service failover and back, a control-plane outage without data-plane loss"
if [[ -n "${KEEP:-}" ]]; then
  HOSTPORT=${UI#http://}; HOSTPORT=${HOSTPORT%/}
  bold "   The mesh stays up: open $UI (from another machine: ssh -L 8081:$HOSTPORT root@this-host, then http://localhost:8081/)."
  say "Traffic: $CM mesh request --dir $DIR c1/client 10.96.0.10:80 --count 5"
  say "Press Enter (or Ctrl-C) to tear it down."
  read -r _ || true
fi
