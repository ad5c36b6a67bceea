#!/usr/bin/env bash
# Runs each cargo-fuzz target (config, selection, metadata) for a bounded time and prints the
# executions per target. The committed seeds live in fuzz/seeds/<target>; the growing working
# corpus in fuzz/target/corpus/<target> (not committed). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit 1.
#
#   scripts/fuzz.sh [SECONDS]        (default 60 per target)
#
# Only the stable toolchain exists here: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its nightly
# flags. Needs `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
status=0
for t in config selection metadata; do
  work="fuzz/target/corpus/$t"
  mkdir -p "$work"
  cp -n fuzz/seeds/$t/* "$work"/ 2>/dev/null || true
  log="fuzz/target/$t.log"
  if cargo fuzz run --fuzz-dir fuzz "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      >"$log" 2>&1; then
    result=ok
  else
    result=CRASH; status=1
  fi
  execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
  echo "$t: ${secs}s, ${execs:-?} executions, corpus $(ls "$work" | wc -l) inputs: $result"
  [ "$result" = ok ] || tail -30 "$log"
done
exit $status
