#!/usr/bin/env bash
# `make demo`: build a sample Lenovo P-70A readback, mount it with mtkfs at ./mnt, loop-mount its
# system partition at ./mnt-system, and show around. `scripts/demo.sh clean` (make demo-clean)
# undoes it all.
#
# Idempotent: a second run reuses the image, the mount and the loop mount it finds, and repairs
# a dead mount (daemon gone) instead of tripping over it.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=demo-data/p70a
# A simulated MT6765 phone in preloader mode whose eMMC is that readback, reached through the
# real BROM + Download Agent client (docs/transports/da.md).
PHONE=sim:mt6765:$DATA
DONE=demo-data/.p70a.done # written after a complete build
MNT=mnt
SYS=mnt-system

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
section() {
    printf '\n'
    bold "== $* =="
}
note() { printf '%s\n' "$*"; }
warn() { printf 'demo: %s\n' "$*" >&2; }
die() {
    warn "$*"
    exit 1
}
# Show a command the way the user would type it, then run it.
run() {
    printf '\n'
    bold "\$ $*"
    "$@"
}

# `mtkfs` and `python` as the user would type them, run from the venv when there is one.
if [[ -x .venv/bin/mtkfs ]]; then
    MTKFS_BIN=$ROOT/.venv/bin/mtkfs
else
    MTKFS_BIN=$(command -v mtkfs || true)
fi
MTKFS_SHOWN=mtkfs
[[ $(command -v mtkfs || true) == "$MTKFS_BIN" && -n $MTKFS_BIN ]] || MTKFS_SHOWN=.venv/bin/mtkfs
mtkfs() {
    [[ -n $MTKFS_BIN ]] || die "mtkfs is not installed; run: make venv"
    "$MTKFS_BIN" "$@"
}
python() {
    if [[ -x .venv/bin/python ]]; then .venv/bin/python "$@"; else python3 "$@"; fi
}

# The file-system type mounted at a path per /proc/self/mountinfo ("" if none). Does not stat
# the path, so it also sees a dead FUSE mount (whose stat fails with ENOTCONN).
fstype_at() {
    local target=$ROOT/$1
    awk -v t="${target// /\\040}" '
        $5 == t { for (i = 7; i <= NF; i++) if ($i == "-") { fs = $(i + 1); break } }
        END { print fs }' /proc/self/mountinfo
}
# The super-block options of that mount (for FUSE: user_id=…,allow_other…).
options_at() {
    local target=$ROOT/$1
    awk -v t="${target// /\\040}" '$5 == t { opts = $NF } END { print opts }' /proc/self/mountinfo
}

# Root may only read a FUSE mount of another user if it was made with allow_other, which a
# normal user may only ask for when /etc/fuse.conf says user_allow_other.
user_allow_other() { grep -Eqs '^[[:space:]]*user_allow_other' /etc/fuse.conf; }

unmount_all() {
    if [[ -n $(fstype_at "$SYS") ]]; then
        run $SUDO umount "$SYS"
    fi
    local fs
    fs=$(fstype_at "$MNT")
    if [[ $fs == fuse.mtkfs ]]; then
        if [[ -n $MTKFS_BIN ]]; then
            run mtkfs umount "$MNT"
        else
            run fusermount3 -u "$MNT"
        fi
    elif [[ -n $fs ]]; then
        die "./$MNT holds a $fs mount that is not the demo's; leaving it alone"
    fi
}

clean() {
    unmount_all
    rmdir "$MNT" "$SYS" 2>/dev/null || true
    if [[ -e demo-data ]]; then
        # The demo image's write journal and backups (if you tried writes) go with it.
        [[ ! -d $DATA ]] || mtkfs journal prune "$PHONE" >/dev/null 2>&1 || true
        run rm -rf demo-data
    fi
    note "demo cleaned up"
}

build() {
    if [[ -f $DONE && -f $DATA/User && -f $DATA/Boot1 && -f $DATA/Boot2 ]]; then
        note "Reusing the P-70A readback in $DATA (make demo-clean to start over)."
        return
    fi
    # Never rebuild files under a live mount.
    unmount_all
    rm -f "$DONE"
    run python -m mtkfs.testing.disk p70a "$DATA"
    touch "$DONE"
    note "(sparse: $(du -sh --apparent-size "$DATA" | cut -f1) apparent, $(du -sh "$DATA" | cut -f1) on disk)"
}

mount_image() {
    mkdir -p "$MNT"
    local fs opts=()
    fs=$(fstype_at "$MNT")
    if [[ -n $SUDO ]] && user_allow_other; then
        opts=(-o allow_other)
    fi
    if [[ $fs == fuse.mtkfs ]]; then
        if ! stat "$MNT/.mtkfs/status.json" >/dev/null 2>&1; then
            warn "./$MNT is a dead mtkfs mount (its daemon is gone); cleaning it up"
            run mtkfs umount "$MNT"
            fs=""
        elif [[ ${#opts[@]} -gt 0 && $(options_at "$MNT") != *allow_other* && -z $(fstype_at "$SYS") ]]; then
            note "Remounting ./$MNT with allow_other so that sudo can loop-mount from it."
            run mtkfs umount "$MNT"
            fs=""
        else
            note "./$MNT is already an mtkfs mount; reusing it."
        fi
    elif [[ -n $fs ]]; then
        die "./$MNT holds a $fs mount that is not the demo's; unmount it first"
    fi
    if [[ -z $fs ]]; then
        run mtkfs mount "${opts[@]}" "$PHONE" "$MNT"
    fi
}

loop_mount_system() {
    mkdir -p "$SYS"
    if [[ -n $(fstype_at "$SYS") ]]; then
        note "./$SYS is already mounted; reusing it."
        return 0
    fi
    if [[ -n $SUDO ]]; then
        if ! command -v sudo >/dev/null; then
            warn "skipping the loop mount: it needs root, and sudo is not installed"
            return 1
        fi
        if [[ $(options_at "$MNT") != *allow_other* ]]; then
            warn "skipping the loop mount: root cannot read ./$MNT, a FUSE mount of yours made"
            warn "without allow_other. Add 'user_allow_other' to /etc/fuse.conf, then"
            warn "make demo-clean && make demo (or run make demo as root)."
            return 1
        fi
    fi
    if ! run $SUDO mount -o loop,ro "$MNT/system.img" "$SYS"; then
        warn "the loop mount failed (no loop devices here? in a container, try --privileged)"
        return 1
    fi
}

main() {
    [[ -e /dev/fuse ]] || die "/dev/fuse is missing: this machine (or container) has no FUSE"

    section "1. A phone's eMMC: what SP Flash Tool reads back from a Lenovo P-70A"
    build
    run ls -ls "$DATA"

    section "2. A simulated MT6765 phone with that eMMC, plugged in: mtkfs identifies it, uploads a Download Agent and reads its partition table"
    run mtkfs ls "$PHONE"

    section "3. Mounted: one file per partition"
    mount_image
    run ls -l "$MNT" "$MNT/regions"
    run head -n 20 "$MNT/.mtkfs/map.json"

    section "4. system.img is an ext4 image: loop-mount it straight from the mount"
    local loop_ok=1
    loop_mount_system || loop_ok=0
    if [[ $loop_ok -eq 1 ]]; then
        run ls -l "$SYS"
        run cat "$SYS/build.prop"
    fi

    local sudo_shown=${SUDO:+sudo }
    section "Try next"
    cat <<EOF
  cp $MNT/boot.img /tmp/                        # reads only boot's bytes from the image
  dd if=$MNT/userdata.img of=/tmp/userdata-head.img bs=1M count=4
  od -A x -t x1z -N 64 $MNT/boot.img             # the ANDROID! header
  sha256sum $MNT/boot.img $MNT/recovery.img
  $MTKFS_SHOWN ls $PHONE --json
  $MTKFS_SHOWN ls $DATA                          # the readback files themselves work too
  cat $MNT/.mtkfs/status.json
EOF
    [[ $loop_ok -eq 0 ]] || echo "  ls -l $SYS/app"
    local first="$MTKFS_SHOWN umount $MNT"
    [[ $loop_ok -eq 0 ]] || first="${sudo_shown}umount $SYS && $first"
    section "Writes: verified flash operations (docs/writes.md)"
    cat <<EOF
  $first
  $MTKFS_SHOWN mount -o rw $PHONE $MNT
  head -c 1M /dev/urandom > /tmp/new-boot.img
  dd if=/tmp/new-boot.img of=$MNT/boot.img conv=notrunc,fsync   # journalled, written, verified
  dd if=/dev/zero of=$MNT/nvram.img conv=notrunc count=1        # refused: protected partition
  $MTKFS_SHOWN status $MNT
  $MTKFS_SHOWN umount $MNT && $MTKFS_SHOWN journal rollback $PHONE   # boot as it was before
EOF
    section "Backups (docs/backup.md)"
    cat <<EOF
  $MTKFS_SHOWN dump $DATA boot recovery lk -o /tmp/backup     # sha256 manifest; Ctrl-C + rerun resumes
  $MTKFS_SHOWN export-rom $DATA /tmp/rom --platform MT6752    # an SP Flash Tool ROM folder
  $MTKFS_SHOWN restore /tmp/backup $DATA --dry-run             # the plan, every file checked
EOF
    section "When done, unmount"
    if [[ $loop_ok -eq 1 ]]; then
        echo "  ${sudo_shown}umount $SYS && $MTKFS_SHOWN umount $MNT"
    else
        echo "  $MTKFS_SHOWN umount $MNT"
    fi
    echo "  or: make demo-clean   (also removes ./demo-data)"
}

case "${1:-}" in
"") main ;;
clean) clean ;;
*) die "usage: $0 [clean]" ;;
esac
