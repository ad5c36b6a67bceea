#!/usr/bin/env bash
# Years of hourly runs (issue 10: "a 3M-file server backed up every hour"): does anything cost
# more because the backup holds INCREMENTS increments? Writes a backup of FILES empty files and
# INCREMENTS hourly increments of PER changed files each with bench/gen_mount_backup.py (in the
# format of an original-tool backup: mirror.json, no index), makes a source equal to its mirror,
# and measures side by side, each against the same step on a backup of 10 increments (or
# against rsync for the runs):
#
#   - the first open (mirror.json imported, every increment's catalog read into the index);
#   - `list`, `show` of the newest, `log` of a file changed many times, `search --mask`;
#   - `backup` with no change, then with PER files changed (rsync -a of the same source to a
#     copy beside it, as the reference);
#   - the mount: time until it answers, `ls snapshots/`, cold `find` over snapshots/latest and
#     over the oldest snapshot, the daemon's VmHWM;
#   - `prune` of one increment out of INCREMENTS (keep-within, so exactly the oldest goes).
#
# Wall times, peak RSS (/usr/bin/time) — read the ratio of the two backups, not the seconds.
# usage: bench/hourly_years.sh [--files N] [--increments N] [--per N]  (WORK=dir to work in,
#        default /dev/shm: a tmpfs, so the disk's noise stays out)
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=100000
INCREMENTS=8760
PER=10
while [ $# -gt 0 ]; do
  case $1 in
    --files) FILES=$2; shift 2 ;;
    --increments) INCREMENTS=$2; shift 2 ;;
    --per) PER=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 2; }
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
cargo build --release -q -p backup-cli
BIN=$PWD/target/release
WORK=$(mktemp -d "${WORK:-/dev/shm}/hourly-years.XXXXXX")
mount_pid=
cleanup() {
  if [ -n "$mount_pid" ]; then kill -TERM "$mount_pid" 2>/dev/null || true; wait "$mount_pid" 2>/dev/null || true; fi
  fusermount3 -u "$WORK/mnt" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# measure CMD...: prints "seconds rss_MiB".
measure() {
  /usr/bin/time -f "%e %M" -o "$WORK/time.log" "$@" >/dev/null 2>"$WORK/stderr.log" \
    || { cat "$WORK/stderr.log" >&2; echo "failed: $*" >&2; exit 1; }
  awk '{printf "%s %.1f\n", $1, $2 / 1024}' "$WORK/time.log"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'; }

# Two backups of the same files: "many" with INCREMENTS increments, "few" with 10.
for b in many few; do
  n=$INCREMENTS
  [ $b = few ] && n=10
  python3 bench/gen_mount_backup.py "$WORK/$b/dist" --files "$FILES" --big 0 \
    --increments "$n" --per-increment "$PER" >/dev/null
  cp -a "$WORK/$b/dist/mirror" "$WORK/$b/src"
  cat >"$WORK/$b/config.json" <<JSON
{"src": "$WORK/$b/src", "dist": "$WORK/$b/dist", "track_dirs": ["src"]}
JSON
done
cp -a "$WORK/many/src" "$WORK/rsync-src"
rsync -a "$WORK/rsync-src/" "$WORK/rsync-dst/"
echo "## $FILES files; $INCREMENTS hourly increments of $PER changed files against 10"
printf '%-34s %9s %9s %7s | %9s %9s\n' step many_s few_s ratio many_rss few_rss
row() { # row LABEL CMD... (the CMD gets the backup's name in $b through the environment)
  local label=$1; shift
  local tm rm tf rf
  read -r tm rm < <(b=many measure "$@")
  read -r tf rf < <(b=few measure "$@")
  printf '%-34s %9s %9s %6sx | %5s MiB %5s MiB\n' "$label" "$tm" "$tf" "$(ratio "$tm" "$tf")" "$rm" "$rf"
}
tool() { "$BIN/backup-tool" "$WORK/$b/dist" "$@"; }
run() { "$BIN/backup" --config "$WORK/$b/config.json" -q "$@"; }
export -f tool run
export BIN WORK
row "first open (import, catalogs)" bash -c 'tool list'
row "list" bash -c 'tool list'
newest() { "$BIN/backup-tool" "$WORK/$1/dist" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["increments"][-1]["name"])'; }
nm=$(newest many) nf=$(newest few)
read -r tm rm < <(measure "$BIN/backup-tool" "$WORK/many/dist" show "$nm")
read -r tf rf < <(measure "$BIN/backup-tool" "$WORK/few/dist" show "$nf")
printf '%-34s %9s %9s %6sx | %5s MiB %5s MiB\n' "show (newest)" "$tm" "$tf" "$(ratio "$tm" "$tf")" "$rm" "$rf"
row "log (a file)" bash -c 'tool log src/mod000/sub00/file0000000.txt'
row "search --mask *file00001*" bash -c "tool search --mask '*file00001*'"
row "backup, first run (index settles)" bash -c 'run'
row "backup, no change" bash -c 'run'
read -r tr rr < <(measure rsync -a --delete "$WORK/rsync-src/" "$WORK/rsync-dst/")
echo "  (rsync -a, no change, same files: $tr s, $rr MiB)"
touch_some() { # PER files of the source get new contents
  python3 - "$1" "$PER" "$FILES" <<'PY'
import os, sys
root, per, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step = max(1, files // per)
for i in range(0, files, step)[:per]:
    p = f"{root}/src/mod{i % 500:03d}/sub{(i // 500) % 20:02d}/file{i:07d}.txt"
    with open(p, "w") as f:
        f.write("changed\n")
PY
}
touch_some "$WORK/many/src"; touch_some "$WORK/few/src"; touch_some "$WORK/rsync-src"
row "backup, $PER files changed" bash -c 'run'
read -r tr rr < <(measure rsync -a --delete "$WORK/rsync-src/" "$WORK/rsync-dst/")
echo "  (rsync -a, the same change: $tr s, $rr MiB)"
for b in many few; do # the change was seen: a new increment of PER changed files
  got=$("$BIN/backup-tool" "$WORK/$b/dist" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["increments"][-1]["changed"])')
  [ "$got" = "$PER" ] || { echo "the $b backup's last run stored $got changed files, not $PER" >&2; exit 1; }
done

if [ -c /dev/fuse ]; then
  echo
  echo "## the mount"
  printf '%-34s %9s %9s %7s\n' step many_s few_s ratio
  declare -A M
  for b in many few; do
    mkdir -p "$WORK/mnt"
    s=$(now)
    "$BIN/backup-tool" "$WORK/$b/dist" mount "$WORK/mnt" >/dev/null 2>"$WORK/mount.log" &
    mount_pid=$!
    until ls "$WORK/mnt/snapshots" >/dev/null 2>&1; do
      kill -0 "$mount_pid" 2>/dev/null || { cat "$WORK/mount.log"; exit 1; }
      sleep 0.005
    done
    M[ready_$b]=$(since "$s")
    s=$(now); M[count_$b]=$(ls "$WORK/mnt/snapshots" | wc -l); M[ls_$b]=$(since "$s")
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    s=$(now); find "$WORK/mnt/snapshots/latest" | wc -l >/dev/null; M[latest_$b]=$(since "$s")
    # (sed reads to the end: no SIGPIPE for ls under pipefail)
    oldest=$(ls "$WORK/mnt/snapshots" | sed -n 1p)
    s=$(now); find "$WORK/mnt/snapshots/$oldest" | wc -l >/dev/null; M[oldest_$b]=$(since "$s")
    M[hwm_$b]=$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$mount_pid/status")
    kill -TERM "$mount_pid"; wait "$mount_pid" 2>/dev/null || true; mount_pid=
    fusermount3 -u "$WORK/mnt" 2>/dev/null || true
  done
  for k in ready ls latest oldest; do
    printf '%-34s %9s %9s %6sx\n' "$k" "${M[${k}_many]}" "${M[${k}_few]}" "$(ratio "${M[${k}_many]}" "${M[${k}_few]}")"
  done
  echo "snapshots listed: ${M[count_many]} against ${M[count_few]}; daemon VmHWM ${M[hwm_many]} MiB against ${M[hwm_few]} MiB"
fi

echo
# --keep-last N-1: exactly the oldest increment goes.
read -r tm rm < <(measure "$BIN/backup-tool" "$WORK/many/dist" prune --keep-last $((INCREMENTS - 1)) -q)
read -r tf rf < <(measure "$BIN/backup-tool" "$WORK/few/dist" prune --keep-last 9 -q)
printf '%-34s %9s %9s %6sx | %5s MiB %5s MiB\n' "prune of the oldest increment" "$tm" "$tf" "$(ratio "$tm" "$tf")" "$rm" "$rf"
