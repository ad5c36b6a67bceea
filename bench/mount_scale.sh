#!/usr/bin/env bash
# The mount at scale (issue 10): a backup of FILES files and INCREMENTS increments written by
# bench/gen_mount_backup.py, then the release mount, side by side with the same work on the
# mirror on disk. Prints: time to write the backup and to build its index, time until the
# mount answers, cold `find` over snapshots/latest against `find` over mirror/, the daemon's
# peak memory (VmHWM) after `find` over latest and over 10 other snapshots, and `ls -l` of
# the BIG-entry folder against the same listing on disk (warm, best of 5).
#
# usage: bench/mount_scale.sh [--files N] [--big N] [--increments N]   (WORK=dir, default
#        /dev/shm/mount-scale: a tmpfs, as a million empty files cost only inodes there)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=1000000
BIG=50000
INCREMENTS=1000
while [ $# -gt 0 ]; do
  case $1 in
    --files) FILES=$2; shift 2 ;;
    --big) BIG=$2; shift 2 ;;
    --increments) INCREMENTS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
WORK=${WORK:-/dev/shm/mount-scale}
cargo build --release -q -p backup-cli
TOOL=$PWD/target/release/backup-tool
DIST=$WORK/dist
MNT=$WORK/mnt
mkdir -p "$WORK" "$MNT"
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }
ratio() { echo "scale=2; $1 / $2" | bc; }
best() { # best of 5 wall times of "$@"
  local b=
  for _ in 1 2 3 4 5; do
    local s e t
    s=$(now); "$@" >/dev/null; e=$(now)
    t=$(secs "$s" "$e")
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
  done
  echo "$b"
}
mount_pid=
cleanup() {
  if [ -n "$mount_pid" ]; then kill -TERM "$mount_pid" 2>/dev/null || true; wait "$mount_pid" 2>/dev/null || true; fi
  fusermount3 -u "$MNT" 2>/dev/null || true
}
trap cleanup EXIT
READY=
start_mount() { # sets mount_pid and READY (seconds until the first listing answered)
  local s
  s=$(now)
  "$TOOL" "$DIST" mount "$MNT" >/dev/null 2>"$WORK/mount.log" &
  mount_pid=$!
  until ls "$MNT/snapshots" >/dev/null 2>&1; do
    kill -0 "$mount_pid" 2>/dev/null || { cat "$WORK/mount.log"; exit 1; }
    sleep 0.005
  done
  READY=$(secs "$s" "$(now)")
}
stop_mount() {
  kill -TERM "$mount_pid"; wait "$mount_pid" || true; mount_pid=
}
hwm() { awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$mount_pid/status"; }

if [ ! -d "$DIST" ]; then
  s=$(now)
  python3 bench/gen_mount_backup.py "$DIST" --files "$FILES" --big "$BIG" --increments "$INCREMENTS"
  echo "write the backup ($FILES files, $INCREMENTS increments): $(secs "$s" "$(now)") s"
  rm -f "$DIST/.backup-index.sqlite"
fi
if [ ! -f "$DIST/.backup-index.sqlite" ]; then
  start_mount
  echo "first mount (builds the index from the metadata and mirror.json): $READY s"
  stop_mount
fi
echo "index: $(du -h "$DIST/.backup-index.sqlite" | cut -f1)"

start_mount
echo "ready (process start to the first listing of snapshots/): $READY s"
s=$(now); n=$(find "$MNT/snapshots/latest" | wc -l); mf=$(secs "$s" "$(now)")
s=$(now); m=$(find "$DIST/mirror" | wc -l); df=$(secs "$s" "$(now)")
echo "find snapshots/latest, cold: $mf s ($n entries); find mirror/: $df s ($m entries); ratio $(ratio "$mf" "$df")"
echo "VmHWM after find over latest: $(hwm)"
mapfile -t snaps < <(ls "$MNT/snapshots" | grep -v latest | awk 'NR % 97 == 1' | head -10)
s=$(now)
for sn in "${snaps[@]}"; do find "$MNT/snapshots/$sn" | wc -l >/dev/null; done
echo "find over ${#snaps[@]} other snapshots: $(secs "$s" "$(now)") s; VmHWM: $(hwm)"
ls -l "$MNT/snapshots/latest/big" >/dev/null
ls -l "$DIST/mirror/big" >/dev/null
lm=$(best ls -l "$MNT/snapshots/latest/big")
ld=$(best ls -l "$DIST/mirror/big")
echo "ls -l of $BIG entries, warm (best of 5): mount $lm s, disk $ld s, ratio $(ratio "$lm" "$ld")"
echo "VmHWM at the end: $(hwm)"
stop_mount

# Prune cost follows the increment, not the backup: remove the oldest increment (its
# 100 changed files) out of all of them, then the next one, and compare with
# `list` (which reads only the increments table). Changes DIST: a rerun has one fewer.
n_inc=$(ls -d "$DIST"/backup_* | wc -l)
for keep in $((n_inc - 1)) $((n_inc - 2)); do
  /usr/bin/time -f '%e %M %O' -o "$WORK/prune.time" "$TOOL" "$DIST" prune --keep-last "$keep" -q >/dev/null
  read -r pt prss pio <"$WORK/prune.time"
  echo "prune 1 of $((keep + 1)) increments: ${pt} s, RSS $((prss / 1024)) MiB, wrote $((pio / 2)) KiB"
done
lt=$(best "$TOOL" "$DIST" list)
echo "list (reference, best of 5): $lt s"

