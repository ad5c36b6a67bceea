#!/usr/bin/env bash
# Cost follows the work, not the size of the backup (issue 10): our `backup` side by side with
# `rsync -a` on one tree of FILES small files, then the explorer and the mount on the result.
#
#   bench/scale.sh [--files N] [--dir DIR] [--keep] [--no-mount] [--no-rsync] [--empty]
#
# Builds release, writes a tree of N small files (default 1,000,000; half under docs/, which
# is tracked, half under media/, included; 1,000 files a folder) with its own generator, and
# then, for the initial run, a run with no change, a run after 1 % of the files changed spread
# over every folder, and one after 1 % changed in a few folders (clustered):
# wall time, peak RSS (/usr/bin/time) and bytes written (/usr/bin/time %O, 512-byte blocks:
# the process's write_bytes) of `rsync -a --delete` and of `backup`, and the ratio of the two;
# then the ratio against `rsync -a --delete --fsync` (where rsync has it), which, like
# `backup`, makes every file it writes durable (issue 16) — a fourth copy of the tree.
# Then `list`, `show`, `search --mask` (wall, RSS) and a mount: time until it answers, cold
# `find` over snapshots/latest against a cold `find` over the mirror on disk, and the daemon's
# VmHWM. The source is read once before the runs so both tools start from the same cache.
# The mount at 1,000 increments and a 50,000-entry folder: bench/mount_scale.sh.
# `--no-rsync` runs only `backup` (no third copy of the tree: for the 3M-file memory check
# where the disk cannot hold three trees); `--empty` writes empty files (inodes only).
# CI runs `--files 20000`. No figure here is a pass/fail: the goals are printed beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=1000000
BASE="${TMPDIR:-/tmp}"
KEEP=0
MOUNT=1
RSYNC=1
EMPTY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES="$2"; shift 2 ;;
    --dir) BASE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-mount) MOUNT=0; shift ;;
    --no-rsync) RSYNC=0; shift ;;
    --empty) EMPTY=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 2; }
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
FSYNC_REF=0
rsync --help 2>/dev/null | grep -q -- '--fsync' && FSYNC_REF=1

cargo build --release -q -p backup-cli
BIN="$(pwd)/target/release"
W="$(mktemp -d "$BASE/backup-scale.XXXXXX")"
mount_pid=
cleanup() {
  if [ -n "$mount_pid" ]; then kill -TERM "$mount_pid" 2>/dev/null || true; wait "$mount_pid" 2>/dev/null || true; fi
  fusermount3 -u "$W/mnt" 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

# The tree: file i lives in <top>/d<i/2000>/f<i>.txt, 40–540 bytes of text.
empty_flag=""
[ "$EMPTY" = 1 ] && empty_flag=--empty
python3 bench/small_tree.py make "$W/src" "$FILES" $empty_flag
cat >"$W/config.json" <<JSON
{"src": "$W/src", "dist": "$W/dist", "track_dirs": ["docs"], "include_dirs": ["media"]}
JSON
echo "tree: $FILES files under $W/src ($(du -sh "$W/src" | cut -f1))"
find "$W/src" -type f -print0 | xargs -0 cat >/dev/null

# measure CMD...: prints "seconds rss_kib written_bytes".
measure() {
  /usr/bin/time -f "%e %M %O" -o "$W/time.log" "$@" >/dev/null 2>"$W/stderr.log" \
    || { cat "$W/stderr.log" >&2; echo "failed: $*" >&2; exit 1; }
  awk '{printf "%s %s %.0f\n", $1, $2, $3 * 512}' "$W/time.log"
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "inf"}'; }

declare -A T R B
phase() {
  local name="$1"
  sync
  if [ "$RSYNC" = 1 ]; then
    read -r T[rsync_$name] R[rsync_$name] B[rsync_$name] < <(measure rsync -a --delete "$W/src/" "$W/rsync/")
    sync
    # The same with every written file fsynced, as `backup` does (issue 16): the reference
    # that pays for the same durability (rsync >= 3.2.4).
    if [ "$FSYNC_REF" = 1 ]; then
      read -r T[rsyncf_$name] _ _ < <(measure rsync -a --delete --fsync "$W/src/" "$W/rsync-fsync/")
    else
      T[rsyncf_$name]=0
    fi
  else
    T[rsync_$name]=0 R[rsync_$name]=0 B[rsync_$name]=0 T[rsyncf_$name]=0
  fi
  sync
  read -r T[ours_$name] R[ours_$name] B[ours_$name] < <(measure "$BIN/backup" --config "$W/config.json" -q)
}
phase initial
phase nochange
# 1 % churn, spread: every 100th file gets new content (all of them under docs/, tracked),
# so every folder of docs/ changes: the worst case for a path-keyed index.
python3 bench/small_tree.py spread "$W/src" "$FILES"
phase churn
# 1 % churn, clustered: the same number of tracked files, all in the first folders of docs/
# (a project someone worked on), the usual shape of a day's changes.
python3 bench/small_tree.py clustered "$W/src" "$FILES"
phase clustered

echo
echo "## backup vs rsync -a, $FILES files"
printf '%-9s %9s %9s %7s %6s | %10s %10s | %12s %12s\n' \
  phase rsync_s ours_s ratio goal rsync_rss ours_rss rsync_write ours_write
for p in initial nochange churn clustered; do
  case $p in initial) goal=1.0 ;; nochange) goal=0.3 ;; *) goal=0.7 ;; esac
  printf '%-9s %9s %9s %6sx %5sx | %6s MiB %6s MiB | %8s MiB %8s MiB\n' "$p" \
    "${T[rsync_$p]}" "${T[ours_$p]}" "$(ratio "${T[ours_$p]}" "${T[rsync_$p]}")" "$goal" \
    "$(mib $((R[rsync_$p] * 1024)))" "$(mib $((R[ours_$p] * 1024)))" \
    "$(mib "${B[rsync_$p]}")" "$(mib "${B[ours_$p]}")"
done
if [ "$RSYNC" = 1 ] && [ "$FSYNC_REF" = 1 ]; then
  echo "against rsync -a --fsync (every written file fsynced, as backup does):"
  for p in initial nochange churn clustered; do
    printf '%-9s %9s %9s %6sx\n' "$p" "${T[rsyncf_$p]}" "${T[ours_$p]}" "$(ratio "${T[ours_$p]}" "${T[rsyncf_$p]}")"
  done
fi
echo "goals: peak RSS of backup <= 64 MiB; a 1 % churn run at 1M files writes <= 32 MiB"
echo "index: $(du -h "$W/dist/.backup-index.sqlite" | cut -f1) (+ WAL $(du -h "$W/dist/.backup-index.sqlite-wal" 2>/dev/null | cut -f1))"

echo
echo "## the explorer (goal: list < 0.2 s, each <= 64 MiB)"
latest=$("$BIN/backup-tool" "$W/dist" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["increments"][-1]["name"])')
printf '%-36s %8s %10s\n' command seconds rss
for args in "list" "show $latest" "search --mask *f000012*" "log docs/d0000/f0000000.txt"; do
  # shellcheck disable=SC2086
  read -r t r _ < <(measure "$BIN/backup-tool" "$W/dist" $args)
  printf '%-36s %8s %6s MiB\n' "$args" "$t" "$(mib $((r * 1024)))"
done

[ "$MOUNT" = 1 ] || exit 0
[ -c /dev/fuse ] || { echo "no /dev/fuse: mount figures skipped"; exit 0; }
echo
echo "## the mount (goals: ready < 0.1 s; cold find <= 3x find on disk; daemon <= 128 MiB)"
mkdir -p "$W/mnt"
s=$(date +%s.%N)
"$BIN/backup-tool" "$W/dist" mount "$W/mnt" >/dev/null 2>"$W/mount.log" &
mount_pid=$!
until ls "$W/mnt/snapshots" >/dev/null 2>&1; do
  kill -0 "$mount_pid" 2>/dev/null || { cat "$W/mount.log"; exit 1; }
  sleep 0.005
done
ready=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
cold_find() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; local s; s=$(date +%s.%N); find "$1" | wc -l >/dev/null; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'; }
fm=$(cold_find "$W/mnt/snapshots/latest")
fd=$(cold_find "$W/dist/mirror")
hwm=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$mount_pid/status")
echo "ready: $ready s"
echo "cold find over snapshots/latest: $fm s; over mirror/ on disk: $fd s; ratio $(ratio "$fm" "$fd")x"
echo "daemon VmHWM after the find: $hwm MiB"
