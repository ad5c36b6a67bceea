#!/usr/bin/env bash
# Power-cut trials on the real LazyFS (dsrhaslab/lazyfs, a C++ FUSE file system that keeps
# written data in its own cache and drops every unsynced byte on `lazyfs::clear-cache`).
# Not in CI: it builds LazyFS from source, which this machine cannot download by itself.
#
#   LAZYFS_SRC=DIR TOML11_SRC=DIR SPDLOG_SRC=DIR scripts/lazyfs_campaign.sh [--trials N] [--files N]
#
# LAZYFS_SRC: a checkout of dsrhaslab/lazyfs; TOML11_SRC and SPDLOG_SRC: checkouts of
# ToruNiina/toml11 and gabime/spdlog (libpcache's CMake fetches them; given here instead).
# Needs g++, cmake, libfuse3-dev, fuse3 (installed with apt-get when missing).
#
# Each trial: `corpus.py mutate`, `backup` (must exit 0), `lazyfs::clear-cache` (the power
# cut, as far as LazyFS models one: unsynced file data goes, names stay), then
# `backup-tool check --verify` must find no problem, and the next `backup` must exit 0 with
# `check --verify` clean again. LazyFS keeps names (its root is an ext4 folder), so this
# checks the data half of the durability rules; tests/src/lazyfs.rs checks both halves.
# LazyFS does not keep an mtime set with utimensat on a file it caches (its getattr answers
# from its cache, its flush rewrites the file), so mtime mismatches are counted apart and do
# not fail a trial. FAULTS_BIN_DIR=DIR runs the `backup`/`backup-tool` found there.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=20 files=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
: "${LAZYFS_SRC:?set LAZYFS_SRC to a lazyfs checkout}"
: "${TOML11_SRC:?set TOML11_SRC to a toml11 checkout}"
: "${SPDLOG_SRC:?set SPDLOG_SRC to a spdlog checkout}"
for p in g++ cmake libfuse3-dev fuse3; do
  dpkg -s "$p" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
done
CORPUS=${CORPUS:-/work/shared/bench/corpus.py}
[ -f "$CORPUS" ] || CORPUS="$(pwd)/../shared/bench/corpus.py"

W="$(mktemp -d "${TMPDIR:-/tmp}/lazyfs-campaign.XXXXXX")"
LAZY_PID=""
cleanup() {
  if [ -n "$LAZY_PID" ]; then
    fusermount3 -u "$W/mnt" 2>/dev/null || umount -l "$W/mnt" 2>/dev/null || true
    kill "$LAZY_PID" 2>/dev/null || true
  fi
  rm -rf "$W"
}
trap cleanup EXIT
B="$W/lazyfs"
cp -r "$LAZYFS_SRC" "$B"
(cd "$B/libs/libpcache" && mkdir -p build && cd build &&
  cmake -DFETCHCONTENT_SOURCE_DIR_TOML="$TOML11_SRC" -DFETCHCONTENT_SOURCE_DIR_SPDLOG="$SPDLOG_SRC" .. >/dev/null &&
  cmake --build . -j2 >/dev/null)
(cd "$B/lazyfs" && mkdir -p build && cd build &&
  cmake -DLAZYFS_BUILD_TESTS=OFF -DCMAKE_CXX_FLAGS="-I$SPDLOG_SRC/include -I$TOML11_SRC" .. >/dev/null && cmake --build . -j2 >/dev/null)

if [ -n "${FAULTS_BIN_DIR:-}" ]; then
  BIN="$FAULTS_BIN_DIR"
else
  cargo build -q -p backup-cli --bins
  BIN="$(pwd)/target/debug"
fi
MNT="$W/mnt" ROOT="$W/root" FIFO="$W/faults.fifo"
mkdir -p "$MNT" "$ROOT"
cat >"$W/lazyfs.toml" <<TOML
[faults]
fifo_path="$FIFO"
[cache]
apply_eviction=false
[cache.simple]
custom_size="2gb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
TOML
# -f: stays in the foreground, so $! is the daemon. -s: one request at a time. LazyFS's fsync path keeps per-path counters in shared maps
# without a lock of their own, and concurrent fsyncs from the copy workers crashed it
# ("Transport endpoint is not connected") in the first trial.
LD_LIBRARY_PATH="$B/libs/libpcache/build" "$B/lazyfs/build/lazyfs" "$MNT" --config-path "$W/lazyfs.toml" \
  -f -s -o allow_other -o modules=subdir -o subdir="$ROOT" &
LAZY_PID=$!
for _ in $(seq 50); do mountpoint -q "$MNT" && break; sleep 0.1; done
mountpoint -q "$MNT" || { echo "LazyFS did not mount" >&2; exit 1; }

python3 "$CORPUS" make "$W/src" --files "$files" >/dev/null
cat >"$W/config.json" <<JSON
{"src": "$W/src", "dist": "$MNT/dist", "max_workers": 4,
 "track_dirs": ["docs", "notes", "projects", "photos"], "include_dirs": ["music", "tmp"]}
JSON
fails=0 mtimes=0
check() {
  "$BIN/backup-tool" "$MNT/dist" check --verify --json >"$W/check.json" 2>"$W/check.err" || true
  read -r bad mt < <(python3 - "$W/check.json" <<'PY'
import json, sys
try:
    problems = json.load(open(sys.argv[1]))["problems"]
except Exception as e:
    print(1, 0); sys.exit()
mt = sum(1 for p in problems if p.get("kind") == "mtime-mismatch")
print(len(problems) - mt, mt)
PY
)
  mtimes=$((mtimes + mt))
  if [ "$bad" -gt 0 ]; then
    echo "trial $1: check --verify after $2: $bad problems (and $mt mtime mismatches)"
    python3 - "$W/check.json" <<'PY' || true
import json, sys
bad = [p for p in json.load(open(sys.argv[1]))["problems"] if p.get("kind") != "mtime-mismatch"]
for p in bad[:5]:
    print(" ", p)
PY
    fails=$((fails + 1))
  fi
}
for t in $(seq "$trials"); do
  [ "$t" -gt 1 ] && python3 "$CORPUS" mutate "$W/src" --seed "$((3000 + t))" >/dev/null
  "$BIN/backup" --config "$W/config.json" -q || { echo "trial $t: backup exit $?"; fails=$((fails + 1)); }
  kill -0 "$LAZY_PID" 2>/dev/null || { echo "trial $t: LazyFS is gone" >&2; exit 1; }
  timeout 10 sh -c "echo lazyfs::clear-cache > '$FIFO'" || { echo "trial $t: LazyFS took no command" >&2; exit 1; }
  sleep 0.5
  check "$t" "a cache clear after exit 0"
  "$BIN/backup" --config "$W/config.json" -q || { echo "trial $t: next backup exit $?"; fails=$((fails + 1)); }
  check "$t" "the next run"
done
echo "lazyfs campaign: $trials trials on $files files, $fails failures ($mtimes mtime mismatches, LazyFS's own)"
[ "$fails" -eq 0 ]
