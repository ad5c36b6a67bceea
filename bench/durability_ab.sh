#!/usr/bin/env bash
# What durability costs (issue 16): two `backup` binaries and `rsync -a` side by side on one
# tree, phase by phase, each tool with its own destination.
#
#   BEFORE_BIN=path/to/old/backup bench/durability_ab.sh [--files N] [--dir DIR] [--dist-dir DIR]
#                                                        [--after-first]
#
# BEFORE_BIN: the binary to compare with (say one built from an older commit: `git worktree
# add /tmp/before REV && CARGO_TARGET_DIR=/tmp/before-target cargo build --release -p
# backup-cli`). AFTER_BIN: default this tree's release build. Up to 100,000 files the tree is
# ../shared/bench/corpus.py's (mutated with `corpus.py mutate`); above, scale.sh's tree of
# small files (1 % of them changed, spread over every folder). --dist-dir puts the three
# destinations on another file system (an exFAT loop mount, say) while the source stays in
# --dir. Phases: initial, no change, after the change. Each is run by rsync, then before,
# then after (--after-first: after, then before), so a busy machine slows all three alike; the
# figures are the wall times and the ratios to rsync of that phase. Run both orders where the
# file system slows as it fills (exfat-fuse: the third tree on a volume is written slower). rsync does not fsync anything; both binaries make their runs
# durable before they report (`before` possibly with one `syncfs`, which FUSE never sees).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=100000
BASE="${TMPDIR:-/tmp}"
DIST_BASE=""
AFTER_FIRST=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES="$2"; shift 2 ;;
    --dir) BASE="$2"; shift 2 ;;
    --dist-dir) DIST_BASE="$2"; shift 2 ;;
    --after-first) AFTER_FIRST=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "${BEFORE_BIN:-}" ] || { echo "set BEFORE_BIN to the binary to compare with" >&2; exit 2; }
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 2; }
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
if [ -z "${AFTER_BIN:-}" ]; then
  cargo build --release -q -p backup-cli
  AFTER_BIN="$(pwd)/target/release/backup"
fi
CORPUS=${CORPUS:-/work/shared/bench/corpus.py}
[ -f "$CORPUS" ] || CORPUS="$(pwd)/../shared/bench/corpus.py"

W="$(mktemp -d "$BASE/backup-ab.XXXXXX")"
D="$W"
[ -n "$DIST_BASE" ] && D="$(mktemp -d "$DIST_BASE/backup-ab.XXXXXX")"
trap 'rm -rf "$W" "$D"' EXIT

if [ "$FILES" -le 100000 ]; then
  python3 "$CORPUS" make "$W/src" --files "$FILES" >/dev/null
  rules='"track_dirs": ["projects", "notes", "docs", ".config"], "include_dirs": ["photos", "music", "tmp", "cache"]'
  change() { python3 "$CORPUS" mutate "$W/src" >/dev/null; }
else
  python3 bench/small_tree.py make "$W/src" "$FILES"
  rules='"track_dirs": ["docs"], "include_dirs": ["media"]'
  change() {
    python3 bench/small_tree.py spread "$W/src" "$FILES"
  }
fi
for who in before after; do
  echo "{\"src\": \"$W/src\", \"dist\": \"$D/dist-$who\", $rules}" >"$W/$who.json"
done
echo "tree: $FILES files under $W/src ($(du -sh "$W/src" | cut -f1)); destinations under $D"
find "$W/src" -type f -print0 | xargs -0 cat >/dev/null

# seconds CMD...: the wall time of one run (the run must succeed).
seconds() {
  sync
  /usr/bin/time -f "%e" -o "$W/time.log" "$@" >/dev/null 2>"$W/stderr.log" \
    || { cat "$W/stderr.log" >&2; echo "failed: $*" >&2; exit 1; }
  cat "$W/time.log"
}
printf '%-9s %9s %9s %9s %13s %13s\n' phase rsync_s before_s after_s before/rsync after/rsync
phase() {
  local r b a
  r=$(seconds rsync -a --delete "$W/src/" "$D/rsync/")
  if [ "$AFTER_FIRST" = 1 ]; then
    a=$(seconds "$AFTER_BIN" --config "$W/after.json" -q)
    b=$(seconds "$BEFORE_BIN" --config "$W/before.json" -q)
  else
    b=$(seconds "$BEFORE_BIN" --config "$W/before.json" -q)
    a=$(seconds "$AFTER_BIN" --config "$W/after.json" -q)
  fi
  awk -v p="$1" -v r="$r" -v b="$b" -v a="$a" \
    'BEGIN {printf "%-9s %9.2f %9.2f %9.2f %12.2fx %12.2fx\n", p, r, b, a, b / r, a / r}'
}
phase initial
phase nochange
change
phase changed
