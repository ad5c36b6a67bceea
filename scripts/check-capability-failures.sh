#!/usr/bin/env bash
# Proves that a test needing a machine capability cannot pass without it under CI: stub
# `losetup`, `mount` and `setpriv` (scripts that fail like the real ones do on a machine without
# loop devices, mount rights or user switching) come first in PATH, and every test that needs
# one must then FAIL under CI=true with a message naming what is missing. Outside CI the same
# tests must pass with one "SKIPPED: missing capability" line (unless --short).
#
#   scripts/check-capability-failures.sh [--short]
#
# --short (what .ci/run runs): only the CI=true half.
set -euo pipefail
cd "$(dirname "$0")/.."
short=0
[ "${1:-}" = "--short" ] && short=1

stubs=$(mktemp -d)
logs=$(mktemp -d)
trap 'rm -rf "$stubs" "$logs"' EXIT
for cmd in losetup mount setpriv; do
  printf '#!/bin/sh\necho "%s: stub: not available on this machine" >&2\nexit 1\n' "$cmd" \
    >"$stubs/$cmd"
  chmod +x "$stubs/$cmd"
done

# package | test target ("--lib" for a unit test) | test name | capability named on failure
cases=(
  "backup-cli|backup_exfat|exfat_dist_falls_back_to_copies_and_says_so_once|loop device (losetup -f)"
  "backup-cli|faults_disk|disk_full_at_any_moment_loses_nothing_and_the_next_run_converges|tmpfs mount"
  "backup-cli|backup_crash|full_disk_stops_cleanly_and_the_next_run_converges|tmpfs mount"
  "backup-cli|faults_source|unreadable_files_as_an_unprivileged_user_are_named_and_retried|setpriv --reuid=nobody"
  "backup-cli|scan_unreadable|unreadable_dir_and_file_are_named_and_the_rest_is_kept|setpriv --reuid=65534"
  "backup-core|--lib|scan::tests::dist_reached_through_a_bind_mount_is_recognized|bind mount (mount --bind)"
)

# Build first, with the real PATH and without CI, so only the tests see the stubs.
cargo build -q -p backup-cli --bins
cargo test -q -p backup-cli --no-run --test backup_exfat --test faults_disk \
  --test backup_crash --test faults_source --test scan_unreadable 2>/dev/null
cargo test -q -p backup-core --lib --no-run 2>/dev/null

run_case() { # ci package target name -> output in $log, status in $rc
  local ci=$1 pkg=$2 target=$3 name=$4
  local sel=(--test "$target")
  [ "$target" = "--lib" ] && sel=(--lib)
  log="$logs/$target-$ci.log"
  set +e
  env PATH="$stubs:$PATH" CI="$ci" \
    cargo test -q -p "$pkg" "${sel[@]}" -- --exact "$name" --test-threads=1 --nocapture >"$log" 2>&1
  rc=$?
  set -e
}

failed=0
for c in "${cases[@]}"; do
  IFS='|' read -r pkg target name capability <<<"$c"
  run_case true "$pkg" "$target" "$name"
  if [ $rc -ne 0 ] && grep -q "missing capability: $capability" "$log" \
    && grep -q "stub: not available" "$log"; then
    echo "ok: CI=true, $target::$name fails naming \"$capability\""
  else
    echo "WRONG: CI=true, $target::$name exited $rc without naming \"$capability\":"
    tail -20 "$log"
    failed=1
  fi
  [ $short = 1 ] && continue
  run_case "" "$pkg" "$target" "$name"
  if [ $rc -eq 0 ] && grep -q "SKIPPED: missing capability: $capability" "$log"; then
    echo "ok: without CI, $target::$name skips with one line naming \"$capability\""
  else
    echo "WRONG: without CI, $target::$name exited $rc / no SKIPPED line:"
    tail -20 "$log"
    failed=1
  fi
done
if [ $failed -ne 0 ]; then
  echo "capability checks failed"
  exit 1
fi
echo "capability checks passed"
