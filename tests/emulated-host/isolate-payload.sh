# shellcheck shell=bash
# Sourced by suite.sh and compare.sh: what the emulated host needs to run
# isolate itself. Fills the array `payload` with `run` options:
#   - the isolate and isolate-vmm binaries (with their libraries), taken from
#     $ISOLATE_HOME/bin, else the workspace's target/release, else PATH;
#   - the guest assets $ISOLATE_HOME/{kernel,rootfs,init};
#   - the tools isolate calls: mkfs.ext4 (volumes, ext4 images), e2fsck (the
#     check before a host mount of a named volume), mkfs.erofs
#     (erofs images) when installed;
#   - ISOLATE_HOME and ISOLATE_BIN in the environment.
# Needs: root (the repository root), ISOLATE_HOME set.

payload=()

# Prints the path of isolate binary NAME, or fails.
isolate_binary() {
    local name=$1 p
    for p in "$ISOLATE_HOME/bin/$name" "${CARGO_TARGET_DIR:-$root/target}/release/$name"; do
        if [[ -x $p ]]; then printf '%s\n' "$p"; return; fi
    done
    command -v "$name"
}

isolate_payload() {
    local name path missing=()
    for name in isolate isolate-vmm; do
        if path=$(isolate_binary "$name"); then
            payload+=(--exec "$path")
            [[ $name != isolate ]] || payload+=(--env "ISOLATE_BIN=$path")
        else
            missing+=("$name binary")
        fi
    done
    for name in kernel rootfs init; do
        if [[ -e $ISOLATE_HOME/$name ]]; then
            payload+=(--add "$ISOLATE_HOME/$name")
        else
            missing+=("$ISOLATE_HOME/$name")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "emulated-host: missing ${missing[*]}; run ./install.sh --no-demo first" >&2
        return 1
    fi
    for name in mkfs.ext4 mkfs.erofs e2fsck; do
        if path=$(command -v "$name"); then payload+=(--exec "$path"); fi
    done
    [[ ! -f /etc/mke2fs.conf ]] || payload+=(--add /etc/mke2fs.conf)
    payload+=(--env "ISOLATE_HOME=$ISOLATE_HOME" --env RUST_BACKTRACE=1)
}
