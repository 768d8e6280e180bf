#!/usr/bin/env bash
# Sets isolate up on a Debian 12 machine (as root) and runs the main job:
# the same small workload under both modes, compared side by side.
#
#   ./install.sh            set up, then `isolate compare -- /bin/sh -c 'echo hi'`
#   ./install.sh --no-demo  set up only (what tests/run uses)
#
# Idempotent: the guest kernel, rootfs and images are cached, so a second run
# takes seconds. Installs: /usr/local/bin/{isolate,isolate-vmm},
# ${ISOLATE_HOME:-/var/lib/isolate}/{kernel,rootfs,init,bin}.
set -euo pipefail
cd "$(dirname "$0")"

demo=1
[ "${1:-}" = "--no-demo" ] && demo=0

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (it installs packages and sets up cgroups and KVM access)" >&2
    exit 1
fi

export ISOLATE_HOME="${ISOLATE_HOME:-/var/lib/isolate}"
export ISOLATE_CACHE="${ISOLATE_CACHE:-/var/cache/isolate}"

packages=(
    build-essential pkg-config file cpio xz-utils busybox-static e2fsprogs erofs-utils
    qemu-system-x86 linux-source-6.1 flex bison bc libelf-dev libssl-dev
    runc bubblewrap util-linux iproute2 strace nftables
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
    echo "install.sh: no Rust toolchain (cargo) found; install one (rustup, or Debian's cargo) and run again" >&2
    exit 1
fi

# Static (static-pie) binaries: no dynamic linking at every start, which is
# about a sixth of container mode's start-up; and they run anywhere.
triple=x86_64-unknown-linux-gnu
bindir="${CARGO_TARGET_DIR:-$PWD/target}/$triple/release"
say "building isolate (release, static)"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" -p isolate -p isolate-vm --bins

say "building the default rootfs and the static guest init"
rootfs/build.sh

say "building the guest kernel (cached after the first build)"
guest-kernel/build.sh

say "installing binaries"
install -d "$ISOLATE_HOME/bin"
install -m 0755 "$bindir/isolate" "$bindir/isolate-vmm" "$ISOLATE_HOME/bin/"
install -m 0755 "$bindir/isolate" "$bindir/isolate-vmm" /usr/local/bin/

say "isolate is set up: $(command -v isolate) (assets in $ISOLATE_HOME)"
if [ "$demo" = 1 ]; then
    say "main job: the same workload under both modes"
    isolate compare --runs 5 -- /bin/sh -c 'echo hi'
fi
