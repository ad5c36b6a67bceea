#!/usr/bin/env bash
# Times `backup-tool search --mask '*.rs'` and `backup-tool list` on a large backup against
# reference commands run side by side on the same tree, and prints the ratios.
#
#   bench/tool_bench.sh            1,000 increments x 100 changed files + a 100k-file mirror
#   bench/tool_bench.sh --short    50 increments x 100 files + a 5k-file mirror (CI)
#   TOOL_BENCH_DIST=/tmp/big bench/tool_bench.sh   generate there once, reuse on later runs
#
# The backup is generated directly on disk (bench/gen_tool_backup.py) in the format `backup`
# writes: running `backup` 1,000 times would take much longer than the measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
incs=1000 files=100000 runs=5
if [[ "${1:-}" == "--short" ]]; then incs=50 files=5000 runs=3; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dist="${TOOL_BENCH_DIST:-$work/dist}"
if [[ "${1:-}" != "--short" ]]; then
  cargo build --release -q -p backup-cli
  tool=target/release/backup-tool
else
  cargo build -q -p backup-cli
  tool=target/debug/backup-tool
fi
if [[ -d "$dist" ]]; then
  echo "reusing the backup at $dist"
else
  echo "generating $incs increments x 100 files + $files-file mirror in $dist ..."
  python3 bench/gen_tool_backup.py "$dist" --increments "$incs" --per-increment 100 --mirror-files "$files"
  sync
fi
python3 - "$tool" "$dist" "$runs" <<'PY'
import statistics, subprocess, sys, time
tool, dist, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
# What the original Python tool does to list: load every increment's metadata and the index.
PYLOAD = ("import glob, json, sys; d = sys.argv[1]; "
          "[json.load(open(f)) for f in glob.glob(d + '/backup_*/backup_*.json')]; "
          "json.load(open(d + '/mirror.json'))")

def t(cmd):
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    xs = []
    for _ in range(runs):
        s = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        xs.append(time.perf_counter() - s)
    return statistics.median(xs)

rows = [
    ("search --mask '*.rs'", [tool, dist, "search", "--mask", "*.rs"],
     "find DIST -name '*.rs'", ["find", dist, "-name", "*.rs"]),
    ("search --mask '*.rs' --json", [tool, dist, "search", "--mask", "*.rs", "--json"],
     "find DIST -name '*.rs'", ["find", dist, "-name", "*.rs"]),
    ("list", [tool, dist, "list"],
     "cat DIST/backup_*/*.json", ["sh", "-c", f"cat {dist}/backup_*/*.json"]),
    ("list", [tool, dist, "list"],
     "python json.load of each", ["python3", "-c", PYLOAD, dist]),
    ("list --json", [tool, dist, "list", "--json"],
     "cat DIST/backup_*/*.json", ["sh", "-c", f"cat {dist}/backup_*/*.json"]),
    ("list --detailed", [tool, dist, "list", "--detailed"],
     "find DIST -type f", ["find", dist, "-type", "f"]),
]
print(f"{'command':<32} {'ours':>8} {'reference':<26} {'ref':>8} {'ratio':>6}")
for name, ours, rname, ref in rows:
    a, b = t(ours), t(ref)
    print(f"{name:<32} {a:>7.3f}s {rname:<26} {b:>7.3f}s {a / b:>6.2f}")
PY
