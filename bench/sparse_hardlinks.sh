#!/usr/bin/env bash
# Benchmark (not a test): restoring a 2 GiB sparse file and a tree of 10,000 hard-linked
# paths, ours against `rsync -aHS` on the same tree.
#
#   bench/sparse_hardlinks.sh [--gib N] [--links N] [--keep] [--dir DIR]
#
# Prints, for each part: wall time, allocated bytes (du) and distinct inodes of the result,
# and the ratios ours/rsync. Also times platform::sparse::copy_sparse alone on the sparse file
# (with and without hashing) against `cp --sparse=always`.
#
# The backup keeps holes (SEEK_DATA/SEEK_HOLE into the mirror) and hard-link groups (one
# inode in the mirror; the catalog records `sparse` and `hardlink_of`), and restore brings
# both back: allocated bytes and inode counts should match rsync's (1.00x).
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=2
LINKS=10000
KEEP=0
BASE="${TMPDIR:-/tmp}"
while [ $# -gt 0 ]; do
  case "$1" in
    --gib) GIB="$2"; shift 2 ;;
    --links) LINKS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dir) BASE="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 2; }

cargo build --release -q -p backup-cli
cargo build --release -q -p backup-platform --example sparse_copy
BIN=target/release
W=$(mktemp -d "$BASE/sparse-hl.XXXXXX")
[ "$KEEP" = 1 ] || trap 'rm -rf "$W"' EXIT
SRC=$W/src
mkdir -p "$SRC/big" "$SRC/links"

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l | xargs printf '%.3f'; }
alloc() { du -s --block-size=1 "$1" | cut -f1; }
inodes() { find "$1" -type f -printf '%i\n' | sort -u | wc -l; }
ratio() { if [ "$2" = 0 ] || [ "$2" = 0.000 ]; then echo "n/a"; else echo "$1 / $2" | bc -l | xargs printf '%.2fx'; fi; }

# A sparse file: GIB GiB long, 4 MiB of data in four places.
truncate -s "${GIB}G" "$SRC/big/disk.img"
for off in 0 300 900 $((GIB * 1024 - 2)); do
  dd if=/dev/urandom of="$SRC/big/disk.img" bs=1M count=1 seek="$off" conv=notrunc status=none
done
# LINKS paths over LINKS/100 inodes (100 links each), spread over 100 folders.
n_inodes=$((LINKS / 100))
for i in $(seq 1 "$n_inodes"); do
  head -c 4096 /dev/urandom > "$SRC/links/base$i"
done
for d in $(seq 1 100); do
  mkdir -p "$SRC/links/d$d"
  for i in $(seq 1 "$n_inodes"); do
    ln "$SRC/links/base$i" "$SRC/links/d$d/f$i"
  done
done
for i in $(seq 1 "$n_inodes"); do rm "$SRC/links/base$i"; done
echo "source: ${GIB} GiB sparse file ($(alloc "$SRC/big") bytes allocated), $LINKS linked paths over $(inodes "$SRC/links") inodes"

echo
echo "== copy_sparse alone (platform), on the sparse file"
t=$(now); cp --sparse=always "$SRC/big/disk.img" "$W/cp.img"; t_cp=$(elapsed "$t")
echo "cp --sparse=always:           ${t_cp}s, $(alloc "$W/cp.img") bytes allocated"
"$BIN/examples/sparse_copy" "$SRC/big/disk.img" "$W/ours.img" keep > "$W/o1"
echo "copy_sparse (no hash):        $(cat "$W/o1"), $(alloc "$W/ours.img") bytes allocated"
rm -f "$W/ours.img"
"$BIN/examples/sparse_copy" "$SRC/big/disk.img" "$W/ours.img" keep hash > "$W/o2"
echo "copy_sparse (blake3 of all):  $(cat "$W/o2"), $(alloc "$W/ours.img") bytes allocated"
t_ours=$(sed 's/.*seconds=\([0-9.]*\).*/\1/' "$W/o1")
echo "ratio copy_sparse/cp: $(ratio "$t_ours" "$t_cp")"
rm -f "$W/ours.img" "$W/cp.img"

echo
echo "== backup, then restore, each against rsync -aHS"
cat > "$W/config.json" <<JSON
{"src": "$SRC", "dist": "$W/dist", "track_dirs": ["big", "links"]}
JSON
t=$(now); "$BIN/backup" --config "$W/config.json" -q; t_backup=$(elapsed "$t")
t=$(now); rsync -aHS "$SRC/" "$W/rsync-backup/"; t_rb=$(elapsed "$t")
echo "backup: ours ${t_backup}s | rsync -aHS ${t_rb}s; ratio $(ratio "$t_backup" "$t_rb"); the mirror's sparse file allocates $(alloc "$W/dist/mirror/big/disk.img") bytes, rsync's $(alloc "$W/rsync-backup/big/disk.img")"
rm -rf "$W/rsync-backup"

for part in big links; do
  t=$(now); "$BIN/backup-tool" "$W/dist" restore "$part/" --to "$W/ours" > /dev/null; t_o=$(elapsed "$t")
  mkdir -p "$W/rsync"
  t=$(now); rsync -aHS "$SRC/$part/" "$W/rsync/$part/"; t_r=$(elapsed "$t")
  a_o=$(alloc "$W/ours/$part"); a_r=$(alloc "$W/rsync/$part")
  i_o=$(inodes "$W/ours/$part"); i_r=$(inodes "$W/rsync/$part")
  echo "$part: ours ${t_o}s, ${a_o} bytes, ${i_o} inodes | rsync -aHS ${t_r}s, ${a_r} bytes, ${i_r} inodes"
  echo "$part: ratio ours/rsync: time $(ratio "$t_o" "$t_r"), allocated $(ratio "$a_o" "$a_r"), inodes $(ratio "$i_o" "$i_r")"
  cmp "$SRC/$part/disk.img" "$W/ours/$part/disk.img" 2>/dev/null && echo "$part: content identical" || true
done

