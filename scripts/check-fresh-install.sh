#!/usr/bin/env bash
# Proves that scripts/install-deps.sh is complete for a bare Debian 12 machine:
# builds a minimal Debian 12 root with debootstrap, bind-mounts the Rust toolchain
# (read-only; cargo's home behind a throwaway overlay) and this checkout
# (read-only), and runs scripts/install-deps.sh and `cargo build --workspace`
# inside it. Needs root and the Debian archive (the mirror of apt's own sources).
#
#   sudo scripts/check-fresh-install.sh      # passed in 78 min on 2 busy cores
#
# Environment: MIRROR (default: the first bookworm URI in apt's sources),
# CHECK_DIR (parent of the scratch directory, default /var/tmp),
# KEEP=1 keeps the scratch directory (the root and its build) for a look.
# Everything it mounts is unmounted on exit, failure included; it removes only the
# scratch directory it created, and only once nothing is mounted below it.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$(pwd)

if [[ $(id -u) -ne 0 ]]; then
  echo "check-fresh-install: needs root (debootstrap, chroot, mounts); run it with sudo" >&2
  exit 1
fi

cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
for dir in "$cargo_home" "$rustup_home"; do
  [[ -d $dir ]] || { echo "check-fresh-install: no Rust toolchain at $dir (set CARGO_HOME/RUSTUP_HOME)" >&2; exit 1; }
done

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "check-fresh-install: installing debootstrap" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi

# The mirror apt already uses for bookworm.
if [[ -z ${MIRROR:-} ]]; then
  MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' |
    awk '$2 == "bookworm" && $3 == "deb" { print $1; exit }')
fi
[[ -n $MIRROR ]] || { echo "check-fresh-install: no bookworm mirror in apt's sources; set MIRROR" >&2; exit 1; }

scratch=$(mktemp -d "${CHECK_DIR:-/var/tmp}/check-fresh-install.XXXXXX")
root=$scratch/root
mounted=() # in mount order; unmounted in reverse

cleanup() {
  local status=$? i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" || true
  done
  if findmnt -rn -o TARGET | grep -q "^$scratch/"; then
    echo "check-fresh-install: something is still mounted under $scratch; left in place" >&2
  elif [[ ${KEEP:-0} == 1 ]]; then
    echo "check-fresh-install: kept $scratch" >&2
  else
    rm -rf --one-file-system "$scratch"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mount_on() { # mount_on TARGET mount-args...
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}

start=$SECONDS
echo "check-fresh-install: debootstrap bookworm (minbase) from $MIRROR into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$scratch/debootstrap.log" 2>&1 || {
  tail -n 30 "$scratch/debootstrap.log" >&2
  exit 1
}
echo "check-fresh-install: root ready after $((SECONDS - start)) s" >&2

# Reach the network the way the host does: name resolution, apt's Acquire
# settings, and the site's own CAs (e.g. an HTTPS proxy's), which the Debian
# package ca-certificates adds to the trust store when install-deps installs it.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
apt-config dump Acquire | grep -v '^Acquire "";$' >"$root/etc/apt/apt.conf.d/00host-acquire" || true

mount_on "$root/proc" -t proc proc
mount_on "$root/sys" -t sysfs sysfs
mount_on "$root/dev" --bind /dev
mount_on "$root/dev/pts" -t devpts devpts
# The toolchain read-only; cargo's home writable through an overlay whose upper
# layer is in the scratch directory (cargo install and its locks write there).
mount_on "$root/root/.rustup" --bind "$rustup_home"
mount -o remount,bind,ro "$root/root/.rustup"
mkdir -p "$scratch/cargo-upper" "$scratch/cargo-work"
mount_on "$root/root/.cargo" -t overlay overlay \
  -o "lowerdir=$cargo_home,upperdir=$scratch/cargo-upper,workdir=$scratch/cargo-work"
mount_on "$root/src" --bind "$checkout"
mount -o remount,bind,ro "$root/src"

echo "check-fresh-install: scripts/install-deps.sh and cargo build --workspace inside the root" >&2
env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  CARGO_HOME=/root/.cargo RUSTUP_HOME=/root/.rustup RUSTUP_AUTO_INSTALL=0 \
  CARGO_TARGET_DIR=/build/target DEBIAN_FRONTEND=noninteractive \
  chroot "$root" /bin/bash -euo pipefail -c '
    cd /src
    scripts/install-deps.sh
    cargo build --workspace --locked
  '
echo "check-fresh-install: passed in $((SECONDS - start)) s" >&2
