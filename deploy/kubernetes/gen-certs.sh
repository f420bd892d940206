#!/usr/bin/env bash
# Creates the certificates of one cluster's overlay with the clustermesh CLI:
#
#   deploy/kubernetes/gen-certs.sh CLUSTER [CA_DIR]
#
# CA_DIR (default: deploy/kubernetes/ca, git-ignored) holds the mesh CA,
# ca.crt and ca.key, which every cluster of the mesh shares: it signs the
# apiservers' server certificates, the agents' remote-<cluster> client
# certificates and everything of Hubble. It is created with
# `clustermesh certs init` when it has no CA yet. Each cluster also gets an
# etcd CA of its own (overlays/CLUSTER/certs/etcd-ca/), so that only its
# own components reach its etcd.
#
# Into overlays/CLUSTER/certs/ it writes exactly these files, and refuses
# to replace any of them unless FORCE=1:
#   ca.crt                                      the mesh CA's certificate
#   etcd-ca/ca.crt etcd-ca/ca.key etcd-ca.crt   the cluster's etcd CA
#   etcd-server.{crt,key}                       etcd-CLUSTER
#   etcd-client.{crt,key}                       etcd-components-CLUSTER (operator, apiserver, agents)
#   apiserver.{crt,key}                         clustermesh-apiserver-CLUSTER
#   remote.{crt,key}                            remote-CLUSTER (its agents, towards other clusters)
#   hubble-server.{crt,key}                     hubble-server-CLUSTER, *.CLUSTER.hubble-grpc.cilium.io
#   hubble-relay-server.{crt,key}               hubble-relay.CLUSTER.hubble-grpc.cilium.io
#   hubble-relay-client.{crt,key}               hubble-relay-CLUSTER
#   hubble-ui-client.{crt,key}                  hubble-ui-CLUSTER
#
# Environment:
#   CLUSTERMESH    the CLI (default: clustermesh on PATH)
#   APISERVER_IPS  space-separated addresses other clusters dial for this
#                  cluster's apiserver (node or load-balancer IPs), added
#                  to its certificate (which always names CLUSTER.mesh.cilium.io)
#   ETCD_IP        the etcd Service's cluster IP (default 10.96.23.79, as
#                  in network.yaml), added to etcd's certificate
#   VALIDITY       days the certificates are valid (default 365)
#   FORCE=1        replace the files above when they exist
#
# It reads CA_DIR and never writes there except for a new CA; the
# certificates are issued in a temporary directory of its own, which it
# removes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
usage() {
  echo "usage: $0 CLUSTER [CA_DIR]" >&2
  exit 64
}
[[ $# -ge 1 && $# -le 2 ]] || usage
cluster=$1
ca_dir=${2:-$here/ca}
cli=${CLUSTERMESH:-clustermesh}
validity=${VALIDITY:-365}
etcd_ip=${ETCD_IP:-10.96.23.79}
ns=clustermesh-system
out=$here/overlays/$cluster/certs

[[ $cluster =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || {
  echo "$0: $cluster is not a cluster name (lowercase letters, digits and '-', at most 32)" >&2
  exit 64
}
[[ -d $here/overlays/$cluster ]] || {
  echo "$0: no overlay $here/overlays/$cluster" >&2
  exit 64
}
command -v "$cli" >/dev/null || {
  echo "$0: $cli not found (build it with cargo build -p cli, or set CLUSTERMESH)" >&2
  exit 69
}

files=(ca.crt etcd-ca/ca.crt etcd-ca/ca.key etcd-ca.crt)
for stem in etcd-server etcd-client apiserver remote hubble-server hubble-relay-server \
  hubble-relay-client hubble-ui-client; do
  files+=("$stem.crt" "$stem.key")
done
if [[ ${FORCE:-} != 1 ]]; then
  for f in "${files[@]}"; do
    if [[ -e $out/$f ]]; then
      echo "$0: $out/$f exists (FORCE=1 replaces the certificates)" >&2
      exit 64
    fi
  done
fi

if [[ ! -e $ca_dir/ca.crt ]]; then
  "$cli" certs init --dir "$ca_dir" --common-name "clustermesh mesh CA"
fi
mkdir -p "$out"

work=$(mktemp -d "${TMPDIR:-/tmp}/clustermesh-certs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
mkdir -m 0700 "$work/mesh" "$work/etcd"
cp "$ca_dir/ca.crt" "$ca_dir/ca.key" "$work/mesh/"

# issue CA_WORKDIR NAME STEM [--server --dns ... | --client]: issues NAME
# with the CA in CA_WORKDIR and moves it to $out/STEM.{crt,key}.
issue() {
  local dir=$1 name=$2 stem=$3
  shift 3
  "$cli" certs issue --dir "$dir" --name "$name" --validity "$validity" "$@" >/dev/null
  mv -f "$dir/$name.crt" "$out/$stem.crt"
  mv -f "$dir/$name.key" "$out/$stem.key"
}

# The cluster's etcd CA: kept (FORCE=1 makes a new one).
if [[ ${FORCE:-} == 1 || ! -e $out/etcd-ca/ca.crt ]]; then
  mkdir -p "$out/etcd-ca"
  "$cli" certs init --dir "$work/etcd" --common-name "etcd CA of cluster $cluster" >/dev/null
  mv -f "$work/etcd/ca.crt" "$work/etcd/ca.key" "$out/etcd-ca/"
fi
cp "$out/etcd-ca/ca.crt" "$out/etcd-ca/ca.key" "$work/etcd/"
cp "$out/etcd-ca/ca.crt" "$out/etcd-ca.crt"
cp "$ca_dir/ca.crt" "$out/ca.crt"

issue "$work/etcd" "etcd-$cluster" etcd-server --server \
  --dns "clustermesh-etcd.$ns.svc" --dns "clustermesh-etcd.$ns.svc.cluster.local" \
  --dns localhost --ip "$etcd_ip" --ip 127.0.0.1
issue "$work/etcd" "etcd-components-$cluster" etcd-client --client

ips=()
for ip in ${APISERVER_IPS:-}; do
  ips+=(--ip "$ip")
done
issue "$work/mesh" "clustermesh-apiserver-$cluster" apiserver --server \
  --dns clustermesh-apiserver.cilium.io --dns "$cluster.mesh.cilium.io" \
  --dns "clustermesh-apiserver.$ns.svc" --ip 127.0.0.1 "${ips[@]}"
issue "$work/mesh" "remote-$cluster" remote --client
issue "$work/mesh" "hubble-server-$cluster" hubble-server --server \
  --dns "*.$cluster.hubble-grpc.cilium.io"
issue "$work/mesh" "hubble-relay-server-$cluster" hubble-relay-server --server \
  --dns "hubble-relay.$cluster.hubble-grpc.cilium.io"
issue "$work/mesh" "hubble-relay-$cluster" hubble-relay-client --client
issue "$work/mesh" "hubble-ui-$cluster" hubble-ui-client --client

echo "certificates of $cluster in $out (mesh CA: $ca_dir)"
