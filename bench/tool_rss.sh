#!/usr/bin/env bash
# Peak RSS and wall time of the backup-tool commands on a backup of N files made by the real
# `backup` (two runs: the corpus, then a day of changes), from /usr/bin/time -v.
#
#   bench/tool_rss.sh [FILES]           default 100000; needs about 2 x 21 KiB x FILES of disk
#   TOOL_RSS_DIR=/tmp/rss bench/tool_rss.sh   build the backup there once, reuse it later
#
# The first command after a run builds or updates the index (`.backup-index.sqlite`); it is
# timed on its own line, then every command twice (the second, warm, is the figure).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-100000}
cargo build --release -q -p backup-cli
bin=$PWD/target/release
work=${TOOL_RSS_DIR:-$(mktemp -d)}
[[ -n "${TOOL_RSS_DIR:-}" ]] || trap 'rm -rf "$work"' EXIT
cd "$work"
if [[ ! -d dist ]]; then
  python3 /work/shared/bench/corpus.py make --files "$files" src >/dev/null
  cat > config.json <<EOF
{"src": "$work/src", "dist": "$work/dist",
 "track_dirs": ["projects", "notes", "docs", ".config"],
 "include_dirs": ["photos", "music", "tmp", "cache"]}
EOF
  "$bin/backup" --config config.json -q
  python3 /work/shared/bench/corpus.py mutate src --change 5 --delete 2 --add 3 >/dev/null
  "$bin/backup" --config config.json -q
fi
first=$(ls dist | grep '^backup_' | head -1)
path=$(cd dist/mirror && find projects -name '*.rs' -print -quit)
measure() {
  /usr/bin/time -v "$bin/backup-tool" dist "$@" >out.txt 2>err.txt || true
  printf '%8s KiB  %8s s  %7s lines  backup-tool DIST %s\n' \
    "$(awk '/Maximum resident/ {print $6}' err.txt)" \
    "$(awk '/Elapsed/ {print $8}' err.txt)" "$(wc -l <out.txt)" "$*"
}
echo "peak RSS, wall time, output lines ($files files; first line: the index built)"
measure list
for round in cold warm; do
  [[ $round == warm ]] && echo "-- again"
  measure list
  measure show latest
  measure show "$first"
  measure search --mask '*.rs'
  measure search --mask '*.rs' --json
  measure log "$path"
  measure diff "$first" latest
  measure restore --at latest --to "$work/r" --dry-run
  measure restore --to "$work/r" --dry-run
  measure check
done
