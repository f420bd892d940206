#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need on Debian 12, and
# nothing when everything is already there (so a ready machine starts at once).
set -euo pipefail

# command or file -> Debian package that provides it
declare -A need=(
  [etcd]=etcd-server
  [etcdctl]=etcd-client
  [protoc]=protobuf-compiler
  [/usr/include/google/protobuf/descriptor.proto]=libprotobuf-dev
  [python3]=python3
  [sysctl]=procps
  [gcc]=gcc
  [/usr/include/stdio.h]=libc6-dev
  [make]=make
  [pkg-config]=pkg-config
  [clang]=clang
  [llc]=llvm
  [/usr/include/bpf/bpf_helpers.h]=libbpf-dev
  [bpftool]=bpftool
  [ip]=iproute2
  [ping]=iputils-ping
  [iperf3]=iperf3
  # the DNS server of the toFQDNs tests (the binary only, no system service)
  [dnsmasq]=dnsmasq-base
  [openssl]=openssl
  [nft]=nftables
  # the Kubernetes tests (kubectl apply, kustomize)
  [kubectl]=kubernetes-client
  # the browser crate's tests (headless, over the DevTools protocol)
  # the Hubble UI's front end (TypeScript, bundled by esbuild at build time)
  [node]=nodejs
  [npm]=npm
  [/usr/bin/chromium]=chromium
  # text in its screenshots (chromium only recommends a font) and in the
  # benchmarks' plots
  [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core
  # cargo install (cargo-nextest below) fetches crates over HTTPS
  [/etc/ssl/certs/ca-certificates.crt]=ca-certificates
)

missing=()
for what in "${!need[@]}"; do
  if [[ $what == /* ]]; then
    [[ -e $what ]] || missing+=("${need[$what]}")
  else
    command -v "$what" >/dev/null 2>&1 || [[ -x /usr/sbin/$what ]] || missing+=("${need[$what]}")
  fi
done

if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-nextest (one-time, a few minutes)" >&2
  cargo install --locked cargo-nextest >&2
fi
