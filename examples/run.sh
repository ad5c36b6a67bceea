#!/usr/bin/env bash
# The bundled example: back up examples/sample twice (with an edit in between), then list and
# search the backup. Works on a fresh machine with a Rust toolchain; writes only under a
# temporary folder, which it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p backup-cli
bin=target/release
work=$(mktemp -d /tmp/backup-example.XXXXXX)
cp -a examples/sample "$work/src"
sed -e "s|\"src\": \"sample\"|\"src\": \"$work/src\"|" \
    -e "s|\"dist\": \"[^\"]*\"|\"dist\": \"$work/dist\"|" examples/config.json > "$work/config.json"

echo "== first backup of $work/src into $work/dist"
"$bin/backup" --config "$work/config.json"

echo "== edit a tracked file, delete another, back up again"
echo '// a second version' >> "$work/src/projects/notes-app/main.rs"
rm "$work/src/projects/website/src/style.css"
"$bin/backup" --config "$work/config.json"

echo "== backup-tool list"
"$bin/backup-tool" "$work/dist" list --detailed
echo "== backup-tool search --mask main.rs"
"$bin/backup-tool" "$work/dist" search --mask main.rs
echo "== the backup is in $work/dist (mirror/, backup_*/, .backup-index.sqlite)"
