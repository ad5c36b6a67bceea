#!/usr/bin/env bash
# Type-checks the code for the platforms CI cannot run: Windows (WinFsp adapter) and macOS
# (FUSE through macFUSE). Check-only: the features used here must never be enabled in a real
# build.
#   winfsp-check      winfsp's `docsrs` (winfsp-sys builds only for MSVC targets);
#                     RUSTC_BOOTSTRAP=winfsp lets that one crate use its doc_cfg attribute.
#   macos-check       fuser's `macos-no-mount` (no macFUSE needed).
#   CARGO_FEATURE_PURE=1 (macOS only) makes blake3's build script skip its C/assembly, which
#                     the Linux C compiler cannot build for Apple targets.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! rustup target add x86_64-pc-windows-gnu x86_64-apple-darwin >/dev/null; then
  echo "cross checks cannot run: rustup could not add the windows-gnu/apple-darwin targets" >&2
  exit 1
fi
failed=()

step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then echo "ok: $name"; else echo "FAILED: $name"; failed+=("$name"); fi
}

step "windows: WinFsp adapter (backup-platform)" \
  env RUSTC_BOOTSTRAP=winfsp cargo check -q -p backup-platform --target x86_64-pc-windows-gnu --features winfsp-check
step "windows: backup-cli" \
  env RUSTC_BOOTSTRAP=winfsp cargo check -q -p backup-cli --target x86_64-pc-windows-gnu --features backup-cli/winfsp-check
step "macos: backup-cli" \
  env CARGO_FEATURE_PURE=1 cargo check -q -p backup-cli --target x86_64-apple-darwin --features backup-cli/macos-check

if [ ${#failed[@]} -gt 0 ]; then
  echo "cross checks failed: ${failed[*]}"
  exit 1
fi
echo "cross checks passed"
