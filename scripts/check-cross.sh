#!/usr/bin/env bash
# Type-checks the code for the platforms CI cannot run: Windows (WinFsp adapter, `serve`) and
# macOS (FUSE through macFUSE, `serve`). Check-only: the features and variables used here must
# never be used for a real build.
#   Windows           winfsp_wrs ships pre-generated bindings and its build script does
#                     nothing off Windows, so no feature is needed. ring (rustls, for `serve
#                     --tls-*`) compiles its C with x86_64-w64-mingw32-gcc (gcc-mingw-w64-x86-64).
#   macos-check       fuser's `macos-no-mount` (no macFUSE needed).
#   CARGO_FEATURE_PURE=1 (macOS only) makes blake3's build script skip its C/assembly, which
#                     the Linux C compiler cannot build for Apple targets.
#   CC/CFLAGS for x86_64-apple-darwin: ring's C built by clang, freestanding, with the few
#                     SDK/libc headers it names stood in by scripts/cross-include/apple (the
#                     objects are never linked).
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

apple_cflags="-nostdinc -isystem $(clang -print-resource-dir 2>/dev/null)/include -I$PWD/scripts/cross-include/apple"

step "windows: WinFsp adapter (backup-platform)" \
  cargo check -q -p backup-platform --target x86_64-pc-windows-gnu
step "windows: backup-cli (mount, serve)" \
  cargo check -q -p backup-cli --target x86_64-pc-windows-gnu
step "macos: backup-cli (mount, serve)" \
  env CARGO_FEATURE_PURE=1 CC_x86_64_apple_darwin=clang CFLAGS_x86_64_apple_darwin="$apple_cflags" \
  cargo check -q -p backup-cli --target x86_64-apple-darwin --features backup-cli/macos-check

if [ ${#failed[@]} -gt 0 ]; then
  echo "cross checks failed: ${failed[*]}"
  exit 1
fi
echo "cross checks passed"
