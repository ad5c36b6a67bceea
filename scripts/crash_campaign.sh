#!/usr/bin/env bash
# Crash campaign: kill -9 `backup` at random moments of runs on a mutating corpus, and after
# every kill prove that each increment committed before it is byte-identical, then that the
# next run converges (mirror == source, `backup-tool check` clean, no increment without
# metadata). The same code runs in CI in a short mode (cli/tests/faults_crash.rs).
#
#   scripts/crash_campaign.sh [--trials N] [--files N] [--seed S]
#
# Defaults: 120 trials on a 3000-file corpus. Prints the seed (replay with --seed).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=120 files=3000 seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
cargo build -q -p backup-cli --bins
# A frozen copy of the binaries: rebuilding the workspace during a long campaign cannot change
# what is being tested.
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
cp target/debug/backup target/debug/backup-tool "$bins"/
export FAULTS_BIN_DIR="$bins"
export CRASH_TRIALS="$trials" CRASH_FILES="$files"
[ -n "$seed" ] && export CRASH_SEED="$seed"
cargo test -q -p backup-cli --test faults_crash -- --nocapture --test-threads=1
