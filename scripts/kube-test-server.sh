#!/usr/bin/env bash
# Builds a real kube-apiserver and kube-controller-manager (Kubernetes v1.20.2)
# from Debian bookworm's own `kubernetes` source package, offline, once, into a
# cache directory, and prints that directory. Later runs print it at once.
#
#   scripts/kube-test-server.sh            build if missing, print the bin dir
#   scripts/kube-test-server.sh --check    exit 0 if built, 1 if not (no build)
#
# The cache is $CLUSTERMESH_KUBE_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/clustermesh/kube.
# The Kubernetes tests (integration --test kubernetes) find the binaries there,
# or in $CLUSTERMESH_KUBE_BIN_DIR. The recipe and its reasons are in
# ../shared/reference/k8s-test-server.md of the workplace: Debian's Go 1.19,
# Debian's reflect2 in place of the vendored v1.0.1 (it crashes the apiserver
# under Go >= 1.18), and `make` (generated OpenAPI files; it needs rsync).
# About 4 minutes and 2 GB of Go build cache on 2 cores; the build cache and the
# sources are removed afterwards, only the two binaries (about 230 MB) stay.
set -euo pipefail

cache="${CLUSTERMESH_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clustermesh/kube}"
bin="$cache/v1.20.2/bin"
binaries=(kube-apiserver kube-controller-manager)

built() {
  for b in "${binaries[@]}"; do [[ -x $bin/$b ]] || return 1; done
}

if [[ ${1:-} == --check ]]; then
  built
  exit
fi
if built; then
  echo "$bin"
  exit 0
fi

say() { echo "kube-test-server: $*" >&2; }
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"

# 1. the build's tools
declare -A need=(
  [/usr/lib/go-1.19/bin/go]=golang-1.19-go
  [rsync]=rsync
  [make]=make
  [/usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go]=golang-github-modern-go-reflect2-dev
  [dpkg-source]=dpkg-dev
  [/usr/bin/kubectl]=kubernetes-client
)
missing=()
for what in "${!need[@]}"; do
  if [[ $what == /* ]]; then
    [[ -e $what ]] || missing+=("${need[$what]}")
  else
    command -v "$what" >/dev/null 2>&1 || missing+=("${need[$what]}")
  fi
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 2. the source package, through a deb-src entry of our own (same mirror and
# keyring as the machine's deb entry); it is left in place for the next build.
srcs=/etc/apt/sources.list.d/clustermesh-kube-src.sources
if ! apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx Sources; then
  uri=$(awk '/^URIs:/ && /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  say "adding a deb-src source ($uri bookworm bookworm-updates) as $srcs"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" | $sudo tee "$srcs" >/dev/null
  $sudo apt-get update -qq
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kube-build.XXXXXX")
cleanup() { chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
say "downloading Debian's kubernetes source package (about 34 MB)"
apt-get source --download-only -qq kubernetes >&2
orig=$(ls kubernetes_*.orig.tar.gz | head -n1)
say "unpacking $orig"
tar -xzf "$orig"
src=$(find . -maxdepth 1 -mindepth 1 -type d | head -n1)
[[ -f $src/go.mod ]] || { say "unexpected layout in $orig (no go.mod under $src)"; exit 1; }

say "replacing the vendored modern-go/reflect2 with Debian's"
rm -rf "$src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"

say "building ${binaries[*]} (about 4 minutes on 2 cores)"
started=$SECONDS
(
  cd "$src"
  env -u GOPATH PATH=/usr/lib/go-1.19/bin:$PATH CGO_ENABLED=0 GOFLAGS= GOPROXY=off \
    GOCACHE="$work/gocache" GOTMPDIR="$work" \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
)
mkdir -p "$bin.tmp"
for b in "${binaries[@]}"; do
  install -m 0755 "$src/_output/bin/$b" "$bin.tmp/$b"
done
"$bin.tmp/kube-apiserver" --version >&2
rm -rf "$bin"
mv "$bin.tmp" "$bin"
say "built in $((SECONDS - started)) s: $bin"
echo "$bin"
