#!/usr/bin/env bash
# Speed of `backup-tool mount` on a backup with many increments, against the same work on the
# backup's own folders (the reference, run side by side). Prints seconds and ratios.
#
#   bench/mount_bench.sh           20,000 files, 300 increments (real `backup` runs), 256 MiB file
#   bench/mount_bench.sh --short   2,000 files, 30 increments, 32 MiB file (CI-sized)
#   KEEP=1 bench/mount_bench.sh    keep the generated backup in $WORK for another run
#
# Goals (issue 4): first listing < 1 s; `ls -l snapshots/` < 1 s; find over snapshots/latest
# <= 3x find over the mirror on disk; sequential read through the mount >= 0.8x direct.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

FILES=20000 INCREMENTS=300 BIG_MB=256 REPEAT=7
if [ "${1:-}" = "--short" ]; then
  FILES=2000 INCREMENTS=30 BIG_MB=32 REPEAT=3
fi
WORK=${WORK:-/tmp/mount-bench-$FILES-$INCREMENTS}
SRC=$WORK/src DIST=$WORK/dist MNT=$WORK/mnt
CORPUS=${CORPUS:-$ROOT/../shared/bench/corpus.py}
[ -f "$CORPUS" ] || CORPUS=/work/shared/bench/corpus.py

cargo build --release -q -p backup-cli
BACKUP=$ROOT/target/release/backup
TOOL=$ROOT/target/release/backup-tool

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}' if b > 0 else 'inf')" "$1" "$2"; }
# Best of $REPEAT runs of a command, in seconds.
best() {
  local b=
  for _ in $(seq "$REPEAT"); do
    local t0 t1 s
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); s=$(secs "$t0" "$t1")
    if [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$s" "$b"; then b=$s; fi
  done
  echo "$b"
}

# Best of $REPEAT sequential reads of a file, as timed by dd itself (no process start-up).
best_read() {
  local b=
  for _ in $(seq "$REPEAT"); do
    local s
    s=$(dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ {print $(NF-3)}')
    if [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$s" "$b"; then b=$s; fi
  done
  echo "$b"
}

if [ ! -f "$WORK/.ready" ]; then
  rm -rf "$WORK"
  mkdir -p "$WORK"
  echo "generating: $FILES files, $INCREMENTS increments (real backup runs)..."
  python3 "$CORPUS" make "$SRC" --files "$FILES" >/dev/null
  cat >"$WORK/config.json" <<EOF
{"src": "$SRC", "dist": "$DIST", "track_dirs": ["*"], "track_files": ["*"]}
EOF
  t0=$(now)
  "$BACKUP" --config "$WORK/config.json" -q
  for i in $(seq 2 $((INCREMENTS - 1))); do
    python3 "$CORPUS" mutate "$SRC" --change 0.2 --delete 0.02 --add 0.05 --seed "$i" >/dev/null
    "$BACKUP" --config "$WORK/config.json" -q
  done
  # The last run adds the big file (after the mutations, so none of them rewrites it).
  # corpus.py's --big-mb overflows at 256 MiB, so it comes from /dev/urandom.
  mkdir -p "$SRC/photos/big"
  head -c "$((BIG_MB << 20))" /dev/urandom >"$SRC/photos/big/video00.bin"
  "$BACKUP" --config "$WORK/config.json" -q
  echo "generated in $(secs "$t0" "$(now)") s"
  touch "$WORK/.ready"
fi
n_inc=$(find "$DIST" -maxdepth 1 -name 'backup_*' -type d | wc -l)
n_files=$(find "$DIST/mirror" -type f | wc -l)
echo "backup: $n_files files in the mirror, $n_inc increments"

mkdir -p "$MNT"
mountpoint -q "$MNT" && fusermount3 -u "$MNT"
cleanup() {
  if [ -n "${PID:-}" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  mountpoint -q "$MNT" 2>/dev/null && { fusermount3 -u "$MNT" || umount -l "$MNT"; }
  if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

mount_it() {
  local t0
  t0=$(now)
  "$TOOL" "$DIST" mount "$MNT" "$@" >/dev/null &
  PID=$!
  until ls "$MNT/snapshots" >/dev/null 2>&1 && mountpoint -q "$MNT"; do sleep 0.005; done
  FIRST=$(secs "$t0" "$(now)")
}
unmount_it() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

mount_it
t0=$(now); ls -l "$MNT/snapshots/" >/dev/null; LSL=$(secs "$t0" "$(now)")
t0=$(now); find "$MNT/snapshots/latest/" >/dev/null; FIND_COLD=$(secs "$t0" "$(now)")
FIND_MNT=$(best find "$MNT/snapshots/latest/")
FIND_DISK=$(best find "$DIST/mirror/")
t0=$(now); find "$MNT/snapshots/" -maxdepth 2 >/dev/null; LS_ALL=$(secs "$t0" "$(now)")

BIG=$DIST/mirror/photos/big/video00.bin
REL=${BIG#"$DIST/mirror/"}
cat "$BIG" >/dev/null # the same page cache for both sides
READ_DIRECT=$(best_read "$BIG")
READ_MNT=$(best_read "$MNT/snapshots/latest/$REL")
unmount_it

mount_it --no-passthrough
READ_DAEMON=$(best_read "$MNT/snapshots/latest/$REL")
unmount_it

echo
echo "| measure | mount | reference | ratio | goal |"
echo "|---|---|---|---|---|"
echo "| first listing of snapshots/ after start | ${FIRST} s | | | < 1 s |"
echo "| ls -l snapshots/ ($n_inc entries) | ${LSL} s | | | < 1 s |"
echo "| find snapshots/ -maxdepth 2 | ${LS_ALL} s | | | |"
echo "| find snapshots/latest/, first (builds the snapshot index) | ${FIND_COLD} s | ${FIND_DISK} s (find mirror/) | $(ratio "$FIND_COLD" "$FIND_DISK")x | |"
echo "| find snapshots/latest/, warm (best of $REPEAT) | ${FIND_MNT} s | ${FIND_DISK} s (find mirror/) | $(ratio "$FIND_MNT" "$FIND_DISK")x | <= 3x |"
echo "| read ${BIG_MB} MiB, passthrough (best of $REPEAT) | ${READ_MNT} s | ${READ_DIRECT} s (direct) | $(ratio "$READ_DIRECT" "$READ_MNT")x speed | >= 0.8x |"
echo "| read ${BIG_MB} MiB, --no-passthrough | ${READ_DAEMON} s | ${READ_DIRECT} s (direct) | $(ratio "$READ_DIRECT" "$READ_DAEMON")x speed | |"
