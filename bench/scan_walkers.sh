#!/usr/bin/env bash
# Compares directory walkers for the scan on a 100k-file corpus and prints ratios.
#
#   bench/scan_walkers.sh [DIR] [ROUNDS]
#
# DIR defaults to $TMPDIR/backup-bench-corpus, made with ../shared/bench/corpus.py (about
# 2.1 GB) when missing. Every walker visits every entry and lstats every non-directory; times
# are the best of ROUNDS interleaved rounds with a warm cache. `find -printf` (GNU findutils,
# which also lstats every entry) runs beside them as an outside reference.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${TMPDIR:-/tmp}/backup-bench-corpus}
rounds=${2:-5}
corpus=${CORPUS_PY:-$here/../shared/bench/corpus.py}
[ -f "$corpus" ] || corpus=/work/shared/bench/corpus.py

if [ ! -d "$dir" ]; then
    echo "making corpus in $dir ..." >&2
    python3 "$corpus" make "$dir" --files "${FILES:-100000}" >&2
fi

cargo build --release -q -p backup-core --example scan_walkers --manifest-path "$here/Cargo.toml"
"$here/target/release/examples/scan_walkers" "$dir" "$rounds" | tee /tmp/scan_walkers.$$.out

best=""
for _ in $(seq "$rounds"); do
    t0=$(date +%s.%N)
    find "$dir" -printf '%s %T@\n' >/dev/null
    t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
done
scan=$(awk '/^backup_core::scan, [0-9]+ threads/ {t=$(NF-1)} END {print t}' /tmp/scan_walkers.$$.out)
scan1=$(awk '/^backup_core::scan, 1 thread/ {print $(NF-1)}' /tmp/scan_walkers.$$.out)
rm -f /tmp/scan_walkers.$$.out
printf '%-38s %9.3f\n' "find -printf (reference)" "$best"
printf 'scan / find: %.2fx (1 thread: %.2fx)\n' "$(echo "$scan / $best" | bc -l)" "$(echo "$scan1 / $best" | bc -l)"
