#!/usr/bin/env bash
# Benchmark: our `backup` against `rsync -a` on the same corpus, side by side.
#
#   bench/backup_vs_rsync.sh [--files N] [--keep] [--dir DIR] [--dist-dir DIR]
#
# --dist-dir puts `dist` and rsync's copy on another file system (an exFAT mount, say) while the
# source stays in --dir. BACKUP_BIN=path runs that binary instead of building this tree's
# (to compare two versions on the same corpus); BACKUP_SYNC=syncfs replaces the per-file fsyncs
# by one syncfs, as versions before 2026-12 did on local disks (see core/src/durable.rs).
#
# Builds the release binary, makes a corpus with ../shared/bench/corpus.py (100,000 files by
# default, ~2.1 GB), then times three phases for both tools: the initial backup, a rerun with
# no change, and a rerun after `corpus.py mutate`. Prints wall times, the ratio ours/rsync and
# peak RSS (from /usr/bin/time -v). CI uses the short mode: --files 2000.
# Goals: initial <= 1.0x rsync, no-change <= 0.5x, after mutate <= 0.7x, RSS <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=100000
KEEP=0
BASE="${TMPDIR:-/tmp}"
DIST_BASE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dir) BASE="$2"; shift 2 ;;
    --dist-dir) DIST_BASE="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
CORPUS=${CORPUS:-/work/shared/bench/corpus.py}
[ -f "$CORPUS" ] || CORPUS="$(pwd)/../shared/bench/corpus.py"
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 2; }
[ -x /usr/bin/time ] || { apt-get install -y -qq time >/dev/null; }

if [ -n "${BACKUP_BIN:-}" ]; then
  BIN="$BACKUP_BIN"
else
  cargo build --release -q -p backup-cli
  BIN="$(pwd)/target/release/backup"
fi
W="$(mktemp -d "$BASE/backup-bench.XXXXXX")"
D="$W"
[ -n "$DIST_BASE" ] && D="$(mktemp -d "$DIST_BASE/backup-bench.XXXXXX")"
[ "$KEEP" = 1 ] || trap 'rm -rf "$W" "$D"' EXIT
echo "corpus: $FILES files under $W/src"
python3 "$CORPUS" make "$W/src" --files "$FILES" >/dev/null
python3 "$CORPUS" stats "$W/src"
cat >"$W/config.json" <<JSON
{"src": "$W/src", "dist": "$D/dist",
 "track_dirs": ["projects", "notes", "docs", ".config"],
 "include_dirs": ["photos", "music", "tmp", "cache"]}
JSON

# measure NAME CMD...: prints "seconds rss_kib" of one run.
measure() {
  local log="$W/time.log"
  sync
  /usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$W/stderr.log" || { cat "$W/stderr.log" >&2; echo "failed: $*" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  # h:mm:ss or m:ss.cc -> seconds
  python3 -c "import sys
p=[float(x) for x in sys.argv[1].split(':')]
s=sum(v*60**i for i,v in enumerate(reversed(p)))
print(f'{s:.2f} {sys.argv[2]}')" "$wall" "$rss"
}

declare -A T R
phase() {
  local name="$1"
  read -r T[rsync_$name] R[rsync_$name] < <(measure rsync -a --delete "$W/src/" "$D/rsync/")
  read -r T[ours_$name] R[ours_$name] < <(measure "$BIN" --config "$W/config.json" -q)
}
phase initial
phase nochange
python3 "$CORPUS" mutate "$W/src" >/dev/null
phase mutate

printf '\n%-10s %10s %10s %8s %8s %12s %12s\n' phase rsync_s ours_s ratio goal rsync_rss ours_rss
for p in initial nochange mutate; do
  case $p in initial) goal=1.0 ;; nochange) goal=0.5 ;; mutate) goal=0.7 ;; esac
  python3 - "$p" "${T[rsync_$p]}" "${T[ours_$p]}" "$goal" "${R[rsync_$p]}" "${R[ours_$p]}" <<'PY'
import sys
p, rs, us, goal, rr, ur = sys.argv[1:]
rs, us, goal = float(rs), float(us), float(goal)
ratio = us / rs if rs > 0 else float('inf')
print(f"{p:<10} {rs:>10.2f} {us:>10.2f} {ratio:>7.2f}x {goal:>7.1f}x {int(rr)/1024:>9.1f} MiB {int(ur)/1024:>8.1f} MiB")
PY
done
