#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and reports what it found.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets (fuzz/fuzz_targets/): config_parse (a profile's JSON text), selection_rules (random
# rules and paths: the scan's pruning never hides a selected file), increment_meta and
# mirror_index (any bytes as metadata: no panic, our own output round-trips).
# Only the stable toolchain exists here, so RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# nightly-only sanitizer flags. Hand-made seeds live in fuzz/seeds/<target>/ (kept in git);
# the corpus a run grows goes to fuzz/corpus/<target>/ and crashes to fuzz/artifacts/ (not kept).
set -euo pipefail

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_parse selection_rules increment_meta mirror_index)

cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: ${secs}s"
    if cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -max_len=8192 -print_final_stats=1 2>"corpus/$t.log"; then
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "corpus/$t.log" | tr '\n' ' '
        echo "-> no failure; corpus $(ls "corpus/$t" | wc -l) inputs"
    else
        status=1
        echo "-> FAILURE, see fuzz/corpus/$t.log and fuzz/artifacts/$t/"
        grep -E "panicked|ERROR|SUMMARY" "corpus/$t.log" | head -5
    fi
done
exit $status
