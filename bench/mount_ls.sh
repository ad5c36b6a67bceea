#!/usr/bin/env bash
# `ls -l` of a 20,000-file folder through the mount against the same listing on disk, side by
# side (issue 14): warm (both listings run once before), best of 7 each, and the ratio. Also
# counts the requests `ls -l` sends with `strace -c` when strace is installed.
#
# usage: bench/mount_ls.sh [--files N]    (WORK=dir, default /dev/shm/mount-ls)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=20000
if [ "${1:-}" = --files ]; then FILES=$2; fi
WORK=${WORK:-/dev/shm/mount-ls}
cargo build --release -q -p backup-cli
TOOL=$PWD/target/release/backup-tool
rm -rf "$WORK"
mkdir -p "$WORK/mnt"
python3 bench/gen_mount_backup.py "$WORK/dist" --files "$FILES" --big "$FILES" --increments 3 \
  --per-increment 10 >/dev/null
"$TOOL" "$WORK/dist" mount "$WORK/mnt" >/dev/null 2>"$WORK/mount.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; fusermount3 -u "$WORK/mnt" 2>/dev/null || true' EXIT
until ls "$WORK/mnt/snapshots" >/dev/null 2>&1; do sleep 0.01; done
now() { date +%s.%N; }
best() {
  local b=
  for _ in 1 2 3 4 5 6 7; do
    local s e t
    s=$(now); ls -l "$1" >/dev/null; e=$(now)
    t=$(echo "$e - $s" | bc)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc)" = 1 ]; then b=$t; fi
  done
  echo "$b"
}
M=$WORK/mnt/snapshots/latest/big
D=$WORK/dist/mirror/big
ls -l "$M" >/dev/null; ls -l "$D" >/dev/null
m=$(best "$M"); d=$(best "$D")
echo "ls -l of $FILES files, warm, best of 7: mount $m s, disk $d s, ratio $(echo "scale=2; $m / $d" | bc)"
h=$(best "$WORK/mnt/history/big")
echo "ls -l of history/big ($FILES versions folders): $h s"
if command -v strace >/dev/null; then
  strace -c -f -o "$WORK/strace.txt" ls -l "$M" >/dev/null
  grep -E "getxattr|statx|lstat|getdents" "$WORK/strace.txt" || true
fi
