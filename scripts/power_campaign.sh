#!/usr/bin/env bash
# Power-cut campaign: `dist` on LazyFS (tests/src/lazyfs.rs, a FUSE file system that keeps
# only what was fsynced when the power goes), power cut at random moments of `backup` and
# right after it exits 0, on a source that changes between runs (changes, additions,
# deletions, renames). After every cut: each increment with metadata re-hashed against its
# catalog, every version of a finished run kept; after a cut that followed exit 0 also the
# mirror, mirror.json and `check --verify`; then the next run must recover and converge.
# The same code runs in CI in a short mode (cli/tests/faults_power.rs).
#
#   scripts/power_campaign.sh [--trials N] [--files N] [--seed S]
#
# Defaults: 50 trials on a 1000-file corpus. Prints the seed (replay with --seed).
set -euo pipefail
cd "$(dirname "$0")/.."
trials=50 files=1000 seed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --trials) trials="$2"; shift 2 ;;
    --files) files="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
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
export BACKUP_POWER_TRIALS="$trials" BACKUP_POWER_FILES="$files"
[ -n "$seed" ] && export BACKUP_POWER_SEED="$seed"
cargo test -q -p backup-cli --test faults_power -- --nocapture --test-threads=1
