#!/usr/bin/env bash
# Builds the default isolate rootfs (busybox) and the static guest init.
#
#   rootfs/build.sh            # installs into ${ISOLATE_HOME:-/var/lib/isolate}
#   ISOLATE_HOME=/tmp/h rootfs/build.sh
#
# Outputs:
#   $ISOLATE_HOME/rootfs/             default rootfs directory (both modes)
#   $ISOLATE_HOME/init/isolate-init   static guest init (VM mode)
#
# Both are replaced atomically (built next to the target, then renamed) and
# only when their inputs changed: a second run with nothing changed does no
# work beyond `cargo build`'s own up-to-date check.
set -euo pipefail

HOME_DIR="${ISOLATE_HOME:-/var/lib/isolate}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
TRIPLE=x86_64-unknown-linux-gnu

log() { echo "rootfs/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_busybox() {
    if [ ! -x /bin/busybox ] || ! file -L /bin/busybox | grep -q 'statically linked'; then
        log "installing busybox-static (apt-get)"
        apt-get install -y busybox-static >/dev/null ||
            die "could not install busybox-static; run 'apt-get update' and retry"
    fi
    file -L /bin/busybox | grep -q 'statically linked' ||
        die "/bin/busybox is not statically linked (install busybox-static, not busybox)"
}

build_rootfs() {
    local dest="$HOME_DIR/rootfs"
    local stamp_want
    stamp_want="script=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1) busybox=$(sha256sum /bin/busybox | cut -d' ' -f1)"
    if [ -f "$dest/.isolate-rootfs" ] && [ "$(cat "$dest/.isolate-rootfs")" = "$stamp_want" ]; then
        log "rootfs up to date: $dest"
        return
    fi

    mkdir -p "$HOME_DIR"
    local tmp
    tmp="$(mktemp -d "$HOME_DIR/.rootfs.XXXXXX")"
    # Leave nothing behind if the build fails half-way.
    trap 'rm -rf "${tmp:-}"; trap - RETURN' RETURN

    mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,home,mnt,var/tmp,data}
    chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
    chmod 0700 "$tmp/root"
    install -m 0755 /bin/busybox "$tmp/bin/busybox"

    local applet
    while read -r applet; do
        case "$applet" in
            bin/busybox | linuxrc | "") continue ;;
        esac
        mkdir -p "$tmp/$(dirname "$applet")"
        ln -sf /bin/busybox "$tmp/$applet"
    done < <(/bin/busybox --list-full)

    cat >"$tmp/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$tmp/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
    echo isolate >"$tmp/etc/hostname"
    cat >"$tmp/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
EOF
    : >"$tmp/etc/resolv.conf"
    cat >"$tmp/etc/os-release" <<'EOF'
NAME="isolate"
ID=isolate
PRETTY_NAME="isolate busybox rootfs"
VERSION_ID="1"
EOF
    chmod 0644 "$tmp"/etc/*
    echo "$stamp_want" >"$tmp/.isolate-rootfs"
    chmod 0755 "$tmp"

    # Atomic replace: rename the new tree in, then drop the old one.
    if [ -e "$dest" ]; then
        local old
        old="$(mktemp -d "$HOME_DIR/.rootfs-old.XXXXXX")"
        mv "$dest" "$old/r"
        mv "$tmp" "$dest"
        rm -rf "$old"
    else
        mv "$tmp" "$dest"
    fi
    log "rootfs built: $dest ($(du -sh "$dest" | cut -f1))"
}

build_init() {
    command -v cargo >/dev/null || die "cargo not found; install Rust (rustup) to build the guest init"
    log "building isolate-init (static, $TRIPLE)"
    # The workspace's release profile aborts on panic; the guest init must
    # not: it reports the failure and reboots from its panic hook, and
    # unwinding keeps that path open for every thread.
    (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$TARGET_DIR" \
        cargo build --quiet --release -p isolate-init --target "$TRIPLE" \
        --config 'profile.release.panic="unwind"' --config 'profile.release.strip="symbols"')
    local bin="$TARGET_DIR/$TRIPLE/release/isolate-init"
    [ -x "$bin" ] || die "cargo did not produce $bin"
    if ! file "$bin" | grep -Eq 'statically linked|static-pie linked'; then
        die "$bin is not static: $(file -b "$bin")"
    fi
    if ldd "$bin" 2>&1 | grep -q '=>'; then
        die "$bin has dynamic dependencies: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
    fi

    local dest="$HOME_DIR/init/isolate-init"
    mkdir -p "$HOME_DIR/init"
    if [ -f "$dest" ] && cmp -s "$bin" "$dest"; then
        log "init up to date: $dest"
        return
    fi
    local tmp
    tmp="$(mktemp "$HOME_DIR/init/.isolate-init.XXXXXX")"
    install -m 0755 "$bin" "$tmp"
    mv -f "$tmp" "$dest"
    log "init installed: $dest ($(stat -c %s "$dest") bytes)"
}

need_busybox
build_rootfs
build_init
