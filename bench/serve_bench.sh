#!/usr/bin/env bash
# Speed of `backup-tool serve` against the same work done on the backup's own folders, side by
# side in one run (ratios, not absolute figures, are what to compare between machines).
#
#   bench/serve_bench.sh [--files N] [--big-mb M] [--wide N] [--keep]
#
# Defaults are CI-sized: --files 2000 --big-mb 64 --wide 10000. The issue-12 figures use
#   bench/serve_bench.sh --files 100000 --big-mb 1024
# Measures (best of REPEAT=3, warm page cache for both sides):
#   GET of the big file (curl) vs `cat` of its backing file       goal >= 0.5x the speed
#   PROPFIND Depth 1 of a folder of --wide files (mirror/ and snapshots/latest/)   goal < 0.5 s
#   `rclone lsf -R` over mirror/ and snapshots/latest vs `find` on the mirror      goal <= 5x
#   the server's peak RSS
# Reference server: `rclone serve webdav` of the mirror folder, for the GET and the rclone
# walk (rclone's WebDAV client paces itself at one request per 10 ms, whatever the server).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FILES=2000 BIG_MB=64 WIDE=10000 KEEP=${KEEP:-0} REPEAT=${REPEAT:-3}
while [ $# -gt 0 ]; do
  case "$1" in
    --files) FILES="$2"; shift 2 ;;
    --big-mb) BIG_MB="$2"; shift 2 ;;
    --wide) WIDE="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for t in curl rclone; do
  command -v $t >/dev/null || { echo "$t is needed (apt-get install $t)" >&2; exit 2; }
done
CORPUS=${CORPUS:-$ROOT/../shared/bench/corpus.py}
[ -f "$CORPUS" ] || CORPUS=/work/shared/bench/corpus.py

cargo build --release -q -p backup-cli
BACKUP=$ROOT/target/release/backup
TOOL=$ROOT/target/release/backup-tool
W=${WORK:-$(mktemp -d /tmp/serve-bench.XXXXXX)}
SRV= REF=
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
  [ -n "$REF" ] && kill "$REF" 2>/dev/null && wait "$REF" 2>/dev/null
  [ "$KEEP" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
calc() { python3 -c "import sys; print(f'{eval(sys.argv[1]):.2f}')" "$1"; }
best() {
  local b=
  for _ in $(seq "$REPEAT"); do
    local t0 t1 s
    t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); s=$(secs "$t0" "$t1")
    if [ -z "$b" ] || python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$s" "$b"; then b=$s; fi
  done
  echo "$b"
}

if [ ! -d "$W/dist/mirror" ]; then
  echo "corpus: $FILES files, one $BIG_MB MiB file, one folder of $WIDE files, under $W"
  python3 "$CORPUS" make "$W/src" --files "$FILES" >/dev/null
  mkdir -p "$W/src/bench/wide"
  head -c "$((BIG_MB * 1024 * 1024))" /dev/urandom >"$W/src/bench/big.bin"
  python3 - "$W/src/bench/wide" "$WIDE" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"file-{i:06d}.txt"), "w") as f:
        f.write(f"entry {i}\n")
PY
  cat >"$W/config.json" <<JSON
{"src": "$W/src", "dist": "$W/dist",
 "track_dirs": ["projects", "notes", "docs", ".config", "bench"],
 "include_dirs": ["photos", "music", "tmp", "cache"]}
JSON
  t0=$(now); "$BACKUP" --config "$W/config.json" -q; t1=$(now)
  echo "backup: $(secs "$t0" "$t1") s"
fi
FILES_IN_MIRROR=$(find "$W/dist/mirror" -type f | wc -l)

"$TOOL" "$W/dist" serve --listen 127.0.0.1:0 >"$W/serve.out" 2>"$W/serve.err" &
SRV=$!
for _ in $(seq 100); do grep -q "^Press Ctrl-C" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^Serving .* at \(http[^ ]*\)$/\1/p' "$W/serve.out")
[ -n "$URL" ] || { cat "$W/serve.err"; echo "server did not start" >&2; exit 1; }
# Wait for the metadata (loaded in the background) before timing anything.
curl -sf -o /dev/null "${URL}snapshots/latest/bench/"
REF_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rclone serve webdav "$W/dist/mirror" --addr "127.0.0.1:$REF_PORT" --config /dev/null >/dev/null 2>&1 &
REF=$!
REF_URL="http://127.0.0.1:$REF_PORT/"
for _ in $(seq 100); do curl -sf -o /dev/null "$REF_URL" && break; sleep 0.1; done

echo
echo "== GET of a $BIG_MB MiB file"
BIG="$W/dist/mirror/bench/big.bin"
cat "$BIG" >/dev/null
t_cat=$(best cat "$BIG")
t_get=$(best curl -sf -o /dev/null "${URL}mirror/bench/big.bin")
t_snap=$(best curl -sf -o /dev/null "${URL}snapshots/latest/bench/big.bin")
echo "cat backing file        $t_cat s  ($(calc "$BIG_MB/$t_cat") MiB/s)"
echo "GET mirror/...          $t_get s  ($(calc "$BIG_MB/$t_get") MiB/s)  speed ratio $(calc "$t_cat/$t_get")x (goal >= 0.5)"
echo "GET snapshots/latest/.. $t_snap s  ($(calc "$BIG_MB/$t_snap") MiB/s)  speed ratio $(calc "$t_cat/$t_snap")x"
t_ref=$(best curl -sf -o /dev/null "${REF_URL}bench/big.bin")
echo "GET from rclone serve   $t_ref s  ($(calc "$BIG_MB/$t_ref") MiB/s)  speed ratio $(calc "$t_cat/$t_ref")x (reference server)"
# The transport's floor: a minimal HTTP responder that hands the file to the kernel with
# sendfile(2) (no user-space copy at all), received by the same curl.
cat >"$W/sendfile.py" <<'PY'
import os, socket, sys
path, s = sys.argv[1], socket.socket()
s.bind(("127.0.0.1", 0)); s.listen(4); print(s.getsockname()[1], flush=True)
size = os.path.getsize(path)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
    with open(path, "rb") as f:
        c.sendfile(f)
    c.close()
PY
coproc SF { python3 "$W/sendfile.py" "$BIG"; }
read -r SF_PORT <&"${SF[0]}"
t_sf=$(best curl -sf -o /dev/null "http://127.0.0.1:$SF_PORT/")
kill "$SF_PID" 2>/dev/null || true
echo "GET from sendfile(2)    $t_sf s  ($(calc "$BIG_MB/$t_sf") MiB/s)  speed ratio $(calc "$t_cat/$t_sf")x (floor of loopback TCP + curl)"

echo
echo "== PROPFIND Depth 1 of a $WIDE-entry folder"
pf() { curl -sf -o /dev/null -X PROPFIND -H "Depth: 1" "$1"; }
t_pm=$(best pf "${URL}mirror/bench/wide/")
t_ps=$(best pf "${URL}snapshots/latest/bench/wide/")
t_ls=$(best ls -l "$W/dist/mirror/bench/wide")
t_html=$(best curl -sf -o /dev/null "${URL}mirror/bench/wide/")
echo "ls -l on disk           $t_ls s"
echo "PROPFIND mirror/        $t_pm s  (goal < 0.5 s)"
echo "PROPFIND snapshots/     $t_ps s  (goal < 0.5 s)"
echo "HTML page mirror/       $t_html s"

echo
echo "== rclone lsf -R vs find on the mirror on disk ($FILES_IN_MIRROR files)"
lsf() { rclone lsf -R --config /dev/null ":webdav:$1" --webdav-url "$2"; }
t_find=$(best find "$W/dist/mirror")
# One run each: a walk takes one 10 ms rclone pacer tick per folder.
t_rm=$(REPEAT=1 best lsf mirror "$URL")
t_rs=$(REPEAT=1 best lsf snapshots/latest "$URL")
t_rr=$(REPEAT=1 best lsf "" "$REF_URL")
n_rs=$(lsf snapshots/latest "$URL" 2>/dev/null | grep -vc '/$')
# The server's own share: the same walk with no client pacing (PROPFIND Depth 1 per folder on
# one keep-alive connection, Python's http.client).
cat >"$W/walk.py" <<'PY'
import http.client, re, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port)
todo, files = [sys.argv[2]], 0
while todo:
    d = todo.pop()
    c.request("PROPFIND", d, headers={"Depth": "1"})
    body = c.getresponse().read().decode("utf-8", "replace")
    for h in re.findall(r"<D:href>([^<]*)</D:href>", body)[1:]:
        if h.endswith("/"):
            todo.append(h)
        else:
            files += 1
print(files)
PY
t_pw=$(best python3 "$W/walk.py" "$URL" /mirror/)
echo "find mirror                      $t_find s  ($(find "$W/dist/mirror" -type d | wc -l) folders)"
echo "rclone lsf -R mirror/            $t_rm s  ratio $(calc "$t_rm/$t_find")x (goal <= 5)"
echo "rclone lsf -R snapshots/latest/  $t_rs s  ($n_rs tracked files)  ratio $(calc "$t_rs/$t_find")x"
echo "rclone lsf -R on rclone serve    $t_rr s  ratio $(calc "$t_rr/$t_find")x (reference server, same mirror)"
echo "unpaced PROPFIND walk of mirror/ $t_pw s  ratio $(calc "$t_pw/$t_find")x ($(python3 "$W/walk.py" "$URL" /mirror/) files)"

echo
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SRV/status)"
