#!/usr/bin/env bash
# Measures SQLite (rusqlite, bundled, WAL/DELETE) against redb as the backup Index, each
# operation in its own process, and prints a table plus the concurrency and exFAT findings.
#
#   bash run.sh                      # N = 100,000 and 1,000,000, concurrency, exFAT (root)
#   SIZES=20000 HOLD=3 bash run.sh   # quick check
#
# Env: DATA (scratch dir on ext4, default /var/tmp/storebench), SIZES, HOLD (seconds the
# concurrency writer keeps its transaction open), SKIP_EXFAT=1, SKIP_CONC=1.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -q
BIN=$PWD/target/release/storebench
DATA=${DATA:-/var/tmp/storebench}
SIZES=${SIZES:-"100000 1000000"}
HOLD=${HOLD:-10}
rm -rf "$DATA"
mkdir -p "$DATA"
TABLE=$DATA/table.txt
: >"$TABLE"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# run N OP CONFIG STORE FILE CMD ARGS...: one measured process, one table row.
run() {
    local n=$1 op=$2 cfg=$3
    shift 3
    local out res tm
    if ! out=$(/usr/bin/time -f 'TIME %e %M %O' "$BIN" "$@" 2>&1); then
        printf '%-8s %-20s %-18s FAILED: %s\n' "$n" "$op" "$cfg" "$(tr '\n' ' ' <<<"$out" | cut -c1-200)" | tee -a "$TABLE"
        return 0
    fi
    res=$(grep '^RESULT' <<<"$out")
    tm=$(grep '^TIME' <<<"$out")
    read -r _ wall rss_kib oblocks <<<"$tm"
    local wb wc db al aux detail=""
    wb=$(field write_bytes "$res")
    wc=$(field wchar "$res")
    db=$(field db_bytes "$res")
    al=$(field db_alloc_bytes "$res")
    aux=$(field aux_bytes "$res")
    for k in write_s commit_s close_s op_s rows found children checksum updated inserted deleted wal_bytes journal_bytes; do
        local v
        v=$(field "$k" "$res")
        [ -n "$v" ] && detail+="$k=$v "
    done
    awk -v n="$n" -v op="$op" -v cfg="$cfg" -v wall="$wall" -v rss="$rss_kib" -v wb="$wb" \
        -v wc="$wc" -v db="$db" -v al="$al" -v aux="$aux" -v d="$detail" 'BEGIN {
        printf "%-8s %-20s %-18s %6.2f %6.1f %7.1f %7.1f %7.1f %7.1f %6.1f  %s\n", n, op, cfg, wall,
            rss / 1024, wc / 1e6, wb / 1e6, db / 1048576, al / 1048576, aux / 1048576, d }' | tee -a "$TABLE"
    # Cross-check: getrusage's block outputs (512 B) against /proc/self/io write_bytes.
    local diff=$((oblocks * 512 - wb))
    if [ "${diff#-}" -gt 65536 ]; then
        echo "   note: %O*512=$((oblocks * 512)) vs write_bytes=$wb" | tee -a "$TABLE"
    fi
}

header() {
    # MB_wr: bytes handed to write(2)/pwrite(2) (/proc/self/io wchar); MB_dirt: page-cache bytes
    # the process dirtied (write_bytes = getrusage %O*512), which on ext4 with large folios
    # over-counts small scattered writes; db_alloc: blocks allocated to the main file.
    printf '\n%-8s %-20s %-18s %6s %6s %7s %7s %7s %7s %6s  %s\n' N operation store/config "wall_s" \
        "RSS_Mi" "MB_wr" "MB_dirt" "db_MiB" "db_allo" "aux_Mi" "internal timings (s) / checks" | tee -a "$TABLE"
}

sq() { echo "$1/sqlite.db"; }
rd() { echo "$1/redb.db"; }
fresh() { # fresh DIR: copies of the freshly initialised stores
    rm -rf "$1"
    mkdir -p "$1"
    cp "$BASE/sqlite.db" "$1/sqlite.db"
    cp "$BASE/redb.db" "$1/redb.db"
    # Clean pages: write_bytes counts a page when it turns dirty, so pages still dirty from
    # the copy would hide the store's own writes.
    sync "$1/sqlite.db" "$1/redb.db"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); data on $(findmnt -n -o FSTYPE -T "$DATA") ($DATA)"
header
for N in $SIZES; do
    BASE=$DATA/base-$N
    mkdir -p "$BASE"
    run "$N" init sqlite-wal-full sqlite "$(sq "$BASE")" init "$N"
    run "$N" init redb redb "$(rd "$BASE")" init "$N"
    run "$N" init sqlite-delete-full sqlite "$DATA/init-delete.db" init "$N" --journal=delete
    rm -f "$DATA/init-delete.db"
    W=$DATA/work-$N
    fresh "$W"
    for s in sqlite redb; do
        f=$W/$s.db
        "$BIN" $s "$f" evict
        run "$N" "scan (cold cache)" $s $s "$f" scan
        run "$N" "scan (warm)" $s $s "$f" scan
        "$BIN" $s "$f" evict
        run "$N" "get 10000 (cold)" $s $s "$f" get 10000 "$N"
        run "$N" "get 10000 (warm)" $s $s "$f" get 10000 "$N"
        "$BIN" $s "$f" evict
        run "$N" "children (cold)" $s $s "$f" children dir5/sub3
        run "$N" "children (warm)" $s $s "$f" children dir5/sub3
    done
    # churn 1%: each variant from a fresh copy of the same initial store
    for v in "wal full" "wal normal" "delete full"; do
        set -- $v
        fresh "$W"
        run "$N" "churn 1% run1" "sqlite-$1-$2" sqlite "$(sq "$W")" churn 1 "$N" 1 --journal="$1" --sync="$2"
    done
    fresh "$W"
    run "$N" "churn 1% run1" redb redb "$(rd "$W")" churn 1 "$N" 1
    # the same amount of change, clustered in blocks of 100 consecutive files
    fresh "$W"
    run "$N" "churn 1% clustered" sqlite-wal-full sqlite "$(sq "$W")" churn 1 "$N" 1 --clustered
    run "$N" "churn 1% clustered" redb redb "$(rd "$W")" churn 1 "$N" 1 --clustered
    # two more runs on the same files: does the file grow run after run?
    fresh "$W"
    for r in 1 2 3; do
        run "$N" "churn 1% run$r (seq)" sqlite-wal-full sqlite "$(sq "$W")" churn 1 "$N" $r
        run "$N" "churn 1% run$r (seq)" redb redb "$(rd "$W")" churn 1 "$N" $r
    done
    run "$N" "scan after 3 churns" sqlite sqlite "$(sq "$W")" scan
    run "$N" "scan after 3 churns" redb redb "$(rd "$W")" scan
    "$BIN" redb "$(rd "$W")" stats | sed 's/^/   redb table stats: /' | tee -a "$TABLE"
    if [ "$N" != "$(echo "$SIZES" | awk '{print $1}')" ]; then rm -rf "$W"; fi
done

# ---------------------------------------------------------------------------------------------
# Concurrency: A holds a write (or read) transaction for HOLD s, B/C start meanwhile.
# ---------------------------------------------------------------------------------------------
scenario() { # scenario TITLE STORE SRC FILE A-CMD... -- B-CMDS (each "cmd args", started from +2 s)
    local title=$1 store=$2 src=$3 file=$4
    shift 4
    rm -f "$file" "$file-wal" "$file-shm" "$file-journal"
    cp "$src" "$file"
    local a=()
    while [ "$1" != "--" ]; do a+=("$1"); shift; done
    shift
    echo
    echo "### $title"
    "$BIN" "$store" "$file" "${a[@]}" &
    local apid=$!
    sleep 2
    local pids=()
    for b in "$@"; do
        # shellcheck disable=SC2086
        "$BIN" "$store" "$file" $b &
        pids+=($!)
        sleep 0.3
    done
    wait "$apid" || echo "A exited with $?"
    for p in "${pids[@]}"; do wait "$p" || echo "B/C exited with $?"; done
    "$BIN" "$store" "$file" probe | sed 's/B(/after A: (/'
}

concurrency() { # concurrency BASE DIR N: each scenario on a fresh copy of the BASE stores
    local base=$1 dir=$2 n=$3 f s
    mkdir -p "$dir"
    f=$(sq "$dir")
    s=$(sq "$base")
    scenario "SQLite WAL: writer holds a write txn ${HOLD}s; reader B, writer C, long-lived reader D" \
        sqlite "$s" "$f" hold-write "$HOLD" "$n" -- probe probe-write "probe-follow $HOLD"
    scenario "SQLite DELETE journal: same" \
        sqlite "$s" "$f" hold-write "$HOLD" "$n" --journal=delete -- probe probe-write "probe-follow $HOLD"
    scenario "SQLite DELETE journal, large write txn (updates all $n file rows, > 16 MiB cache)" \
        sqlite "$s" "$f" hold-write "$HOLD" "$n" "$n" --journal=delete -- probe "probe-follow $HOLD"
    scenario "SQLite WAL, large write txn (updates all $n file rows)" \
        sqlite "$s" "$f" hold-write "$HOLD" "$n" "$n" -- probe "probe-follow $HOLD"
    f=$(rd "$dir")
    s=$(rd "$base")
    scenario "redb ExclusiveWriter (default): writer holds a write txn ${HOLD}s; read-only open B, read-write open C" \
        redb "$s" "$f" hold-write "$HOLD" "$n" -- probe probe-write
    scenario "redb ExclusiveWriter: A only reads, via open_read_only; B read-only open, C read-write open" \
        redb "$s" "$f" hold-read "$HOLD" -- probe probe-write
    scenario "redb ExclusiveWriter: A only reads, but through Database::open (read-write handle)" \
        redb "$s" "$f" hold-read "$HOLD" --rw-handle -- probe probe-write
    scenario "redb SingleWriter (4.5+): writer holds a write txn ${HOLD}s; reader B, writer C, long-lived reader D" \
        redb "$s" "$f" hold-write "$HOLD" "$n" --redb-mode=single -- "probe --redb-mode=single" "probe-write --redb-mode=single" "probe-follow $HOLD --redb-mode=single"
    scenario "redb SingleWriter, large write txn (updates all $n file rows)" \
        redb "$s" "$f" hold-write "$HOLD" "$n" "$n" --redb-mode=single -- "probe --redb-mode=single" "probe-follow $HOLD --redb-mode=single"
    scenario "redb mixed: writer in SingleWriter mode, reader B in default mode" \
        redb "$s" "$f" hold-write "$HOLD" "$n" --redb-mode=single -- probe
}

FIRST=$(echo "$SIZES" | awk '{print $1}')
if [ -z "${SKIP_CONC:-}" ]; then
    echo
    echo "## Concurrency on ext4 (N=$FIRST)"
    concurrency "$DATA/base-$FIRST" "$DATA/conc" "$FIRST"
fi

# ---------------------------------------------------------------------------------------------
# exFAT through FUSE (exfat-fuse), N = first size
# ---------------------------------------------------------------------------------------------
if [ -z "${SKIP_EXFAT:-}" ]; then
    echo
    echo "## exFAT (exfat-fuse on a loop device), N=$FIRST"
    IMG=$DATA/exfat.img
    MNT=$DATA/exfat-mnt
    truncate -s 2G "$IMG"
    DEV=$(losetup -f --show "$IMG")
    cleanup() {
        umount "$MNT" 2>/dev/null || true
        losetup -d "$DEV" 2>/dev/null || true
        rm -f "$IMG"
    }
    trap cleanup EXIT
    mkfs.exfat "$DEV" >/dev/null
    mkdir -p "$MNT"
    mount.exfat-fuse "$DEV" "$MNT"
    findmnt "$MNT" | tail -1
    header
    E=$MNT/t
    mkdir -p "$E"
    run "$FIRST" "init (exFAT)" sqlite-wal-full sqlite "$E/sqlite.db" init "$FIRST"
    ls -la "$E" | sed 's/^/   /'
    run "$FIRST" "churn 1% (exFAT)" sqlite-wal-full sqlite "$E/sqlite.db" churn 1 "$FIRST" 1
    run "$FIRST" "scan (exFAT)" sqlite-wal sqlite "$E/sqlite.db" scan
    run "$FIRST" "init (exFAT)" sqlite-delete-full sqlite "$E/sqlite-del.db" init "$FIRST" --journal=delete
    run "$FIRST" "churn 1% (exFAT)" sqlite-delete-full sqlite "$E/sqlite-del.db" churn 1 "$FIRST" 1 --journal=delete
    run "$FIRST" "init (exFAT)" redb redb "$E/redb.db" init "$FIRST"
    run "$FIRST" "churn 1% (exFAT)" redb redb "$E/redb.db" churn 1 "$FIRST" 1
    run "$FIRST" "scan (exFAT)" redb redb "$E/redb.db" scan
    if [ -z "${SKIP_CONC:-}" ]; then
        scenario "exFAT: SQLite WAL writer + reader B, writer C, long-lived reader D" sqlite \
            "$DATA/base-$FIRST/sqlite.db" "$E/c-sqlite.db" hold-write "$HOLD" "$FIRST" -- probe probe-write "probe-follow $HOLD"
        scenario "exFAT: redb SingleWriter writer + reader B, writer C, long-lived reader D" redb \
            "$DATA/base-$FIRST/redb.db" "$E/c-redb.db" hold-write "$HOLD" "$FIRST" --redb-mode=single -- \
            "probe --redb-mode=single" "probe-write --redb-mode=single" "probe-follow $HOLD --redb-mode=single"
    fi
fi

echo
echo "## Versions and formats"
grep -A1 -E '^name = "(rusqlite|libsqlite3-sys|redb)"' Cargo.lock | paste - - - | sed 's/--//'
echo "sqlite3 CLI $(sqlite3 --version | cut -d' ' -f1) on the Index written by the bundled SQLite:"
sqlite3 "$DATA/base-$FIRST/sqlite.db" .tables 'SELECT count(*) FROM entries' 'PRAGMA journal_mode' 'PRAGMA integrity_check' | sed 's/^/   /'

echo
echo "## Table (also in $TABLE)"
cat "$TABLE"
