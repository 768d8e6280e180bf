#!/usr/bin/env bash
# Build isolate's minimal guest kernel (x86-64) and install it.
#
#   guest-kernel/build.sh [--force] [--no-install]
#
# Source:  $ISOLATE_KERNEL_SRC (a kernel source tree or a tarball), else Debian's
#          /usr/src/linux-source-6.1.tar.xz (package linux-source-6.1).
# Config:  `make tinyconfig` + guest-kernel/config.fragment, then `olddefconfig`,
#          then every fragment line is checked against the final .config.
#          $ISOLATE_KERNEL_EXTRA_CONFIG (optional) names a second fragment whose
#          lines override and extend config.fragment (e.g. CONFIG_PVM_GUEST=y).
# Cache:   ${ISOLATE_CACHE:-/var/cache/isolate}/kernel/<key>/ where <key> hashes
#          the fragment, this script and the source identity.
# Install: ${ISOLATE_HOME:-/var/lib/isolate}/kernel/{vmlinux,bzImage,config,build-info}
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"
FRAGMENT="$HERE/config.fragment"
EXTRA_FRAGMENT="${ISOLATE_KERNEL_EXTRA_CONFIG:-}"
CACHE_ROOT="${ISOLATE_CACHE:-/var/cache/isolate}/kernel"
INSTALL_DIR="${ISOLATE_HOME:-/var/lib/isolate}/kernel"
DEFAULT_SRC=/usr/src/linux-source-6.1.tar.xz
SRC_SPEC="${ISOLATE_KERNEL_SRC:-$DEFAULT_SRC}"
JOBS=$(nproc)
KARCH=x86_64

FORCE=0
INSTALL=1
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --no-install) INSTALL=0 ;;
        -h|--help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
            exit 0 ;;
        *) echo "build.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

T_START=$SECONDS
msg()  { printf '[guest-kernel %4ds] %s\n' "$((SECONDS - T_START))" "$*"; }
die()  { printf '[guest-kernel] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- host tools
apt_install() {
    msg "installing missing Debian packages: $*"
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        msg "apt-get install failed; running apt-get update and retrying"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
            || die "could not install: $*"
    fi
}

ensure_tools() {
    local missing=()
    command -v make  >/dev/null || missing+=(build-essential)
    command -v gcc   >/dev/null || missing+=(build-essential)
    command -v flex  >/dev/null || missing+=(flex)
    command -v bison >/dev/null || missing+=(bison)
    command -v bc    >/dev/null || missing+=(bc)
    command -v xz    >/dev/null || missing+=(xz-utils)
    command -v sha256sum >/dev/null || missing+=(coreutils)
    [[ -e /usr/include/gelf.h ]] || missing+=(libelf-dev)
    [[ -e /usr/include/openssl/opensslv.h ]] || missing+=(libssl-dev)
    command -v flock >/dev/null || missing+=(util-linux)
    if ((${#missing[@]})); then
        # shellcheck disable=SC2207
        missing=($(printf '%s\n' "${missing[@]}" | sort -u))
        apt_install "${missing[@]}"
    fi
}

# ---------------------------------------------------------------- source
# Sets SRC_KIND (tarball|tree), SRC_PATH (absolute) and SRC_ID.
resolve_source() {
    if [[ ! -e "$SRC_SPEC" ]]; then
        if [[ "$SRC_SPEC" == "$DEFAULT_SRC" ]]; then
            apt_install linux-source-6.1
            [[ -e "$SRC_SPEC" ]] || die "linux-source-6.1 installed but $SRC_SPEC is missing"
        else
            die "ISOLATE_KERNEL_SRC=$SRC_SPEC does not exist"
        fi
    fi
    SRC_PATH=$(realpath "$SRC_SPEC")
    if [[ -d "$SRC_PATH" ]]; then
        [[ -f "$SRC_PATH/Makefile" && -f "$SRC_PATH/Kconfig" ]] \
            || die "$SRC_PATH is not a kernel source tree (no Makefile/Kconfig)"
        SRC_KIND=tree
        local ver
        ver=$(make -s -C "$SRC_PATH" kernelversion 2>/dev/null) \
            || die "cannot read the kernel version of $SRC_PATH"
        SRC_ID="tree:$ver:$SRC_PATH"
    elif [[ -f "$SRC_PATH" ]]; then
        SRC_KIND=tarball
        msg "hashing source tarball $SRC_PATH"
        SRC_ID="tarball:$(sha256sum "$SRC_PATH" | cut -d' ' -f1)"
    else
        die "$SRC_PATH is neither a directory nor a file"
    fi
}

# Unpacks a tarball once under the cache; sets SRC_TREE.
prepare_tree() {
    if [[ "$SRC_KIND" == tree ]]; then
        SRC_TREE="$SRC_PATH"
        if [[ -f "$SRC_TREE/.config" || -d "$SRC_TREE/include/config" ]]; then
            die "source tree $SRC_TREE is not clean (it has a .config or include/config);
       the build is done out of tree (O=...): run 'make mrproper' in it first"
        fi
        return
    fi
    local sha=${SRC_ID#tarball:}
    local dest="$CACHE_ROOT/src/${sha:0:16}"
    if [[ -f "$dest/.unpacked" ]]; then
        SRC_TREE=$(cat "$dest/.unpacked")
        msg "using unpacked source $SRC_TREE"
        return
    fi
    msg "unpacking $SRC_PATH into $dest"
    rm -rf "$dest" "$dest.tmp"
    mkdir -p "$dest.tmp"
    tar -xf "$SRC_PATH" -C "$dest.tmp"
    mv "$dest.tmp" "$dest"
    local top
    if [[ -f "$dest/Makefile" && -f "$dest/Kconfig" ]]; then
        top="$dest"
    else
        top=$(find "$dest" -mindepth 2 -maxdepth 2 -name Kconfig -printf '%h\n' | head -n1)
        [[ -n "$top" && -f "$top/Makefile" ]] || die "no kernel source tree inside $SRC_PATH"
    fi
    echo "$top" >"$dest/.unpacked"
    SRC_TREE="$top"
}

# ---------------------------------------------------------------- config check
# Prints every fragment line that does not hold in .config ($1); returns 1 if any.
verify_config() {
    local cfg=$1 bad=0 line sym want have def
    while IFS= read -r line; do
        if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            sym=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
        elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            sym=${BASH_REMATCH[1]} want=n
        else
            continue
        fi
        if have=$(grep -m1 "^$sym=" "$cfg"); then
            have=${have#*=}
        else
            have=n
        fi
        if [[ "$have" != "$want" ]]; then
            bad=1
            printf '  NOT AS ASKED  %-36s wanted %-6s got %s\n' "$sym" "$want" "$have" >&2
            if [[ "$want" == n ]]; then
                local sel
                sel=$(grep -rn --include='Kconfig*' -E "^[[:space:]]+select ${sym#CONFIG_}([[:space:]]|\$)" "$SRC_TREE/arch/x86" \
                    "$SRC_TREE"/{init,kernel,mm,fs,drivers,net,lib,block,crypto,security} 2>/dev/null \
                    | head -n 6 | sed "s|^$SRC_TREE/|             |" || true)
                if [[ -n "$sel" ]]; then
                    printf '           forced on; symbols that select it:\n%s\n' "$sel" >&2
                else
                    printf '           forced on: not user-settable here (no prompt, on by default when its dependencies hold)\n' >&2
                fi
                continue
            fi
            def=$(grep -rn --include='Kconfig*' -E "^(menu)?config ${sym#CONFIG_}\$" "$SRC_TREE" | head -n1 || true)
            if [[ -n "$def" ]]; then
                local file=${def%%:*} rest=${def#*:}; local lno=${rest%%:*}
                printf '           defined at %s:%s; its dependencies:\n' "${file#"$SRC_TREE"/}" "$lno" >&2
                awk -v s="$lno" 'NR>s && /^(menu)?config |^endmenu|^endif|^choice|^comment/ {exit}
                                 NR>s && /^[ \t]+(depends on|select|if )/ {print "             " $0}' \
                    "$file" >&2
                printf '           (an enclosing menu or "if" block of that file can gate it too)\n' >&2
            else
                printf '           (no such symbol in this source tree)\n' >&2
            fi
        fi
    done <"$EFFECTIVE"
    return "$bad"
}

# ---------------------------------------------------------------- install
install_from() {
    local from=$1
    if ((INSTALL == 0)); then
        msg "not installing (--no-install); artifacts are in $from"
        return
    fi
    mkdir -p "$INSTALL_DIR"
    local f
    for f in vmlinux bzImage config build-info; do
        cp "$from/$f" "$INSTALL_DIR/.$f.new"
        mv -f "$INSTALL_DIR/.$f.new" "$INSTALL_DIR/$f"
    done
    msg "installed into $INSTALL_DIR:"
    ( cd "$INSTALL_DIR" && ls -l vmlinux bzImage config build-info | sed 's/^/    /' )
}

# ================================================================= main
# (a function, so bash has read the whole script before any of it runs)
main() {
    BUILD="" OUT="" EFFECTIVE=""
    cleanup() { rm -rf "${BUILD:-/nonexistent}" "${OUT:-/nonexistent}.tmp" "${EFFECTIVE:-/nonexistent}"; }
    trap cleanup EXIT

    local f dups
    [[ -f "$FRAGMENT" ]] || die "missing $FRAGMENT"
    if [[ -n "$EXTRA_FRAGMENT" ]]; then
        [[ -f "$EXTRA_FRAGMENT" ]] || die "ISOLATE_KERNEL_EXTRA_CONFIG=$EXTRA_FRAGMENT does not exist"
        EXTRA_FRAGMENT=$(realpath "$EXTRA_FRAGMENT")
    fi
    for f in "$FRAGMENT" ${EXTRA_FRAGMENT:+"$EXTRA_FRAGMENT"}; do
        dups=$(grep -oE '^(# )?CONFIG_[A-Za-z0-9_]+' "$f" | sed 's/^# //' | sort | uniq -d)
        [[ -z "$dups" ]] || die "$f sets these symbols more than once: $(tr "\n" " " <<<"$dups")"
    done
    # The effective fragment: config.fragment, minus the symbols the extra
    # fragment sets, then the extra fragment.
    EFFECTIVE=$(mktemp /tmp/isolate-kernel-fragment.XXXXXX)
    if [[ -n "$EXTRA_FRAGMENT" ]]; then
        awk 'function sym(l) { if (match(l, /^(# )?CONFIG_[A-Za-z0-9_]+/)) { l = substr(l, 1, RLENGTH); sub(/^# /, "", l); return l } return "" }
             FNR == NR { if ((s = sym($0)) != "") drop[s] = 1; next }
             !(sym($0) in drop)' "$EXTRA_FRAGMENT" "$FRAGMENT" >"$EFFECTIVE"
        { echo "## --- extra fragment: $EXTRA_FRAGMENT ---"; cat "$EXTRA_FRAGMENT"; } >>"$EFFECTIVE"
        msg "extra fragment: $EXTRA_FRAGMENT"
    else
        cp "$FRAGMENT" "$EFFECTIVE"
    fi
    ensure_tools
    resolve_source

    KEY=$(printf '%s\n' "fragment:$(sha256sum <"$EFFECTIVE")" "script:$(sha256sum <"$SELF")" \
            "source:$SRC_ID" "arch:$KARCH" | sha256sum | cut -c1-16)
    OUT="$CACHE_ROOT/$KEY"
    msg "source: $SRC_ID"
    msg "cache key: $KEY"

    mkdir -p "$CACHE_ROOT"
    # Serialize concurrent runs on the same cache.
    exec 9>"$CACHE_ROOT/.lock"
    if ! flock -n 9; then
        msg "another build.sh run holds $CACHE_ROOT/.lock; waiting for it"
        flock 9
    fi

    if ((FORCE == 0)) && [[ -f "$OUT/.complete" ]]; then
        msg "using cached kernel build $OUT (no rebuild; --force to rebuild)"
        install_from "$OUT"
        msg "done in $((SECONDS - T_START))s"
        exit 0
    fi

    prepare_tree

    BUILD=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")

    LOGDIR="$CACHE_ROOT/logs"
    mkdir -p "$LOGDIR"
    LOG="$LOGDIR/build-$KEY.log"
    : >"$LOG"

    export KBUILD_BUILD_USER=isolate KBUILD_BUILD_HOST=isolate
    MAKE=(make -C "$SRC_TREE" O="$BUILD" ARCH="$KARCH")

    msg "configuring: tinyconfig + $(basename "$FRAGMENT")${EXTRA_FRAGMENT:+ + $(basename "$EXTRA_FRAGMENT")}"
    "${MAKE[@]}" tinyconfig >>"$LOG" 2>&1 || { tail -n 40 "$LOG" >&2; die "make tinyconfig failed (log: $LOG)"; }
    # Merge: drop every symbol the fragment sets, then append the fragment.
    awk 'function sym(l) { if (match(l, /^(# )?CONFIG_[A-Za-z0-9_]+/)) { l = substr(l, 1, RLENGTH); sub(/^# /, "", l); return l } return "" }
         FNR == NR { if ((s = sym($0)) != "") drop[s] = 1; next }
         !(sym($0) in drop)' "$EFFECTIVE" "$BUILD/.config" >"$BUILD/.config.merged"
    grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set$)' "$EFFECTIVE" >>"$BUILD/.config.merged"
    mv "$BUILD/.config.merged" "$BUILD/.config"
    "${MAKE[@]}" olddefconfig >>"$LOG" 2>&1 || { tail -n 40 "$LOG" >&2; die "make olddefconfig failed (log: $LOG)"; }

    msg "verifying every option of the fragment in the final .config"
    if ! verify_config "$BUILD/.config"; then
        cp "$BUILD/.config" "$LOGDIR/config-$KEY.rejected"
        die "fragment options do not hold after 'make olddefconfig' (listed above);
       add the missing dependencies (or drop what forces them on) in the fragment. Final .config kept at
       $LOGDIR/config-$KEY.rejected"
    fi
    msg "config OK: all $(grep -cE '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set$)' "$EFFECTIVE") fragment options hold"

    msg "building vmlinux + bzImage with -j$JOBS (log: $LOG)"
    T_BUILD=$SECONDS
    if ! "${MAKE[@]}" -j"$JOBS" vmlinux bzImage >>"$LOG" 2>&1; then
        grep -E 'error|Error' "$LOG" | tail -n 20 >&2 || true
        echo "---- last lines of $LOG ----" >&2
        tail -n 30 "$LOG" >&2
        die "kernel build failed"
    fi
    BUILD_SECS=$((SECONDS - T_BUILD))
    msg "compiled in ${BUILD_SECS}s"

    RELEASE=$(cat "$BUILD/include/config/kernel.release" 2>/dev/null || echo unknown)
    rm -rf "$OUT.tmp"
    mkdir -p "$OUT.tmp"
    cp "$BUILD/vmlinux" "$OUT.tmp/vmlinux"
    cp "$BUILD/arch/x86/boot/bzImage" "$OUT.tmp/bzImage"
    cp "$BUILD/.config" "$OUT.tmp/config"
    cp "$EFFECTIVE" "$OUT.tmp/fragment"
    {
        echo "key=$KEY"
        echo "release=$RELEASE"
        echo "source=$SRC_ID"
        echo "extra_fragment=${EXTRA_FRAGMENT:-none}"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "compile_seconds=$BUILD_SECS"
        echo "jobs=$JOBS"
        echo "vmlinux_bytes=$(stat -c %s "$OUT.tmp/vmlinux")"
        echo "bzImage_bytes=$(stat -c %s "$OUT.tmp/bzImage")"
    } >"$OUT.tmp/build-info"
    touch "$OUT.tmp/.complete"
    rm -rf "$OUT"
    mv "$OUT.tmp" "$OUT"
    msg "cached in $OUT (release $RELEASE)"
    msg "sizes: vmlinux $(stat -c %s "$OUT/vmlinux") bytes, bzImage $(stat -c %s "$OUT/bzImage") bytes"

    install_from "$OUT"
    msg "done in $((SECONDS - T_START))s"
}

main "$@"; exit $?
