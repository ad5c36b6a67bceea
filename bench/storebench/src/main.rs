//! storebench: SQLite (rusqlite, bundled) against redb as the on-disk Index of a backup Mirror.
//!
//! Every operation runs as its own process so that peak RSS and bytes written are per
//! operation. Usage:
//!
//!   storebench STORE PATH CMD [ARGS...] [--journal=wal|delete] [--sync=full|normal]
//!              [--redb-mode=exclusive|single]
//!
//! STORE: sqlite | redb.  CMD:
//!   init N            create the store, insert N file rows (+ their directory rows) in key order,
//!                     one transaction
//!   scan              iterate all rows in key order, decode, count, checksum
//!   churn P N [RUN]   one write transaction: update P% of file rows, insert P/2 %, delete P/2 %
//!                     (RUN 2, 3... continue from the state run RUN-1 left)
//!   get K N           K random point lookups among the N file keys
//!   children DIR      immediate children of DIR ("dir5/sub3") by prefix range scan
//!   hold-write SECS N [U]  open a write transaction, write U (10k) updates + a marker row, sleep,
//!                     commit
//!   hold-read SECS [--rw-handle]  open (read-only handle unless --rw-handle), read, sleep
//!   probe             open for reading; report whether it opens, row count, marker presence
//!   probe-follow SECS open for reading, count, sleep SECS keeping the handle, count again
//!   probe-write       try to open for writing and start a write transaction, without waiting
//!   evict             fsync and drop the store's files from the page cache (cold-cache runs)
//!
//! Prints one `RESULT key=value ...` line; the script adds /usr/bin/time figures.

use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEED: u64 = 0x05ee_d0f1_dec5;
const CACHE_BYTES: usize = 16 * 1024 * 1024;
const MARKER_KEY: &[u8] = b"~marker";
static CLUSTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

// ---------------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------------

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }
}

/// One Index row, borrowed from the store's buffer where possible.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    size: u64,
    mtime_ns: i64,
    mode: u32,
    uid: u32,
    gid: u32,
    tracked: bool,
    kind: u8,
    hash: [u8; 32],
    increment: Option<String>,
    xattrs: Option<Vec<u8>>,
}

/// Value of row `id` at `generation` (0 = init; churn writes generation 1).
fn entry_for(id: u64, generation: u64, kind: u8) -> Entry {
    let mut r = Rng(SEED ^ id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (generation << 56));
    let mut hash = [0u8; 32];
    for c in hash.chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    let a = r.next();
    let b = r.next();
    // ~90% of rows name the Increment that holds their previous version (25 bytes),
    // ~50% carry a 64-byte xattr blob: ~118 bytes per value on average.
    let increment = (!a.is_multiple_of(10)).then(|| {
        format!(
            "2026-{:02}-{:02}T{:02}-{:02}-{:02}Z-{:04x}",
            1 + (a >> 8) % 12,
            1 + (a >> 16) % 28,
            (a >> 24) % 24,
            (a >> 32) % 60,
            (a >> 40) % 60,
            (a >> 48) & 0xffff
        )
    });
    let xattrs = b.is_multiple_of(2).then(|| {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(b"user.comment\0");
        while v.len() < 64 {
            v.push(b'a' + (r.next() % 26) as u8);
        }
        v
    });
    Entry {
        size: if kind == 1 {
            4096
        } else {
            r.next() % (1 << 30)
        },
        mtime_ns: 1_700_000_000_000_000_000 + (r.next() % 100_000_000_000_000_000) as i64,
        mode: if kind == 1 { 0o40755 } else { 0o100644 },
        uid: 1000,
        gid: 1000,
        tracked: true,
        kind,
        hash,
        increment,
        xattrs,
    }
}

const FIXED: usize = 8 + 8 + 4 + 4 + 4 + 1 + 1 + 32;

/// redb value encoding (SQLite stores the same fields as columns).
fn encode(e: &Entry, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&e.size.to_le_bytes());
    out.extend_from_slice(&e.mtime_ns.to_le_bytes());
    out.extend_from_slice(&e.mode.to_le_bytes());
    out.extend_from_slice(&e.uid.to_le_bytes());
    out.extend_from_slice(&e.gid.to_le_bytes());
    out.push(e.tracked as u8);
    out.push(e.kind);
    out.extend_from_slice(&e.hash);
    let flags = e.increment.is_some() as u8 | (e.xattrs.is_some() as u8) << 1;
    out.push(flags);
    if let Some(s) = &e.increment {
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    if let Some(x) = &e.xattrs {
        out.extend_from_slice(&(x.len() as u16).to_le_bytes());
        out.extend_from_slice(x);
    }
}

/// What a merge-join needs from a row, decoded without allocating.
struct View<'a> {
    size: u64,
    mtime_ns: i64,
    mode: u32,
    kind: u8,
    hash: &'a [u8],
    increment: Option<&'a str>,
    xattrs: Option<&'a [u8]>,
}

fn decode(b: &[u8]) -> Result<View<'_>> {
    if b.len() < FIXED + 1 {
        bail!("value too short: {} bytes", b.len());
    }
    let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let flags = b[FIXED];
    let mut o = FIXED + 1;
    let increment = if flags & 1 != 0 {
        let n = b[o] as usize;
        let s = std::str::from_utf8(&b[o + 1..o + 1 + n])?;
        o += 1 + n;
        Some(s)
    } else {
        None
    };
    let xattrs = if flags & 2 != 0 {
        let n = u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        Some(&b[o + 2..o + 2 + n])
    } else {
        None
    };
    Ok(View {
        size: u64at(0),
        mtime_ns: u64at(8) as i64,
        mode: u32at(16),
        kind: b[29],
        hash: &b[30..62],
        increment,
        xattrs,
    })
}

fn fold(sum: u64, key: &[u8], v: &View) -> u64 {
    let mut h = sum ^ v.size ^ (v.mtime_ns as u64).rotate_left(7) ^ (v.mode as u64) << 3;
    h ^= v.kind as u64;
    h ^= u64::from_le_bytes(v.hash[..8].try_into().expect("8 bytes"));
    h ^= v.increment.map_or(0, |s| s.len() as u64) << 11;
    h ^= v.xattrs.map_or(0, |x| x.len() as u64) << 17;
    h ^= key.len() as u64;
    splitmix64(h)
}

fn file_key(i: u64) -> Vec<u8> {
    format!("dir{}\0sub{}\0file{}.dat", i / 1000, i % 7, i).into_bytes()
}

/// One row of the generated tree, produced in byte order of its key (= depth-first walk
/// order, since '/' became '\0').
struct GenRow {
    key: Vec<u8>,
    /// Stable identity for value generation and churn selection.
    id: u64,
    /// File index (None for directory rows).
    file: Option<u64>,
    kind: u8,
}

/// Calls `f` for every row (directories "dirD", "dirD/subS" and files) in key order, with
/// memory bounded by one directory's worth of keys.
fn for_each_row(n: u64, mut f: impl FnMut(GenRow) -> Result<()>) -> Result<()> {
    let ndirs = n.div_ceil(1000);
    let mut dirs: Vec<u64> = (0..ndirs).collect();
    dirs.sort_by_cached_key(|d| d.to_string());
    let mut files: Vec<(Vec<u8>, u64)> = Vec::with_capacity(1000);
    for d in dirs {
        f(GenRow {
            key: format!("dir{d}").into_bytes(),
            id: n + d * 8,
            file: None,
            kind: 1,
        })?;
        files.clear();
        for i in d * 1000..((d + 1) * 1000).min(n) {
            files.push((file_key(i), i));
        }
        files.sort();
        let mut it = files.drain(..).peekable();
        for s in 0..7u64 {
            let sub = format!("dir{d}\0sub{s}").into_bytes();
            f(GenRow {
                key: sub.clone(),
                id: n + d * 8 + 1 + s,
                file: None,
                kind: 1,
            })?;
            while let Some((k, _)) = it.peek() {
                if k.starts_with(&sub) && k.get(sub.len()) == Some(&0) {
                    let (k, i) = it.next().expect("peeked");
                    f(GenRow {
                        key: k,
                        id: i,
                        file: Some(i),
                        kind: 0,
                    })?;
                } else {
                    break;
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Change {
    Update,
    InsertAfter,
    Delete,
}

/// Churn selection for file `i`: P% updated, P/2 % get a new sibling key, P/2 % deleted, spread
/// uniformly over the key space.
fn change_for(i: u64, pct: f64, run: u64) -> Option<Change> {
    // Clustered: whole blocks of 100 consecutive files change together (a few directories
    // with many changes, as real runs have) instead of rows spread over the key space.
    let unit = if CLUSTERED.load(std::sync::atomic::Ordering::Relaxed) {
        i / 100
    } else {
        i
    };
    let r = (splitmix64(unit ^ (0xc4 + run).wrapping_mul(SEED)) % 1_000_000) as f64;
    let u = pct * 10_000.0;
    if r < u {
        Some(Change::Update)
    } else if r < u * 1.5 {
        Some(Change::InsertAfter)
    } else if r < u * 2.0 {
        Some(Change::Delete)
    } else {
        None
    }
}

/// Change of file `i` in churn run `run` (1, 2, ...), given the earlier runs: a file deleted
/// by an earlier run is neither updated nor deleted again.
fn change_in_run(i: u64, pct: f64, run: u64) -> Option<Change> {
    if (1..run).any(|r| change_for(i, pct, r) == Some(Change::Delete)) {
        return match change_for(i, pct, run) {
            Some(Change::InsertAfter) => Some(Change::InsertAfter),
            _ => None,
        };
    }
    change_for(i, pct, run)
}

/// "file5.dat" < "file5.dat.new1" < "file50.dat": the new key sorts right after its sibling.
fn new_key(key: &[u8], run: u64) -> Vec<u8> {
    let mut k = key.to_vec();
    k.extend_from_slice(format!(".new{run}").as_bytes());
    k
}

fn dir_prefix(dir: &str) -> Vec<u8> {
    let mut p: Vec<u8> = dir
        .trim_matches('/')
        .bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect();
    p.push(0);
    p
}

// ---------------------------------------------------------------------------------------------
// Options and reporting
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Opts {
    journal: String,
    sync: String,
    redb_single: bool,
    rw_handle: bool,
}

struct Report {
    fields: Vec<(String, String)>,
    start: Instant,
}

impl Report {
    fn new() -> Self {
        Report {
            fields: Vec::new(),
            start: Instant::now(),
        }
    }
    fn add(&mut self, k: &str, v: impl std::fmt::Display) {
        self.fields.push((k.to_string(), v.to_string()));
    }
    fn secs(&mut self, k: &str, since: Instant) -> Instant {
        self.add(k, format!("{:.3}", since.elapsed().as_secs_f64()));
        Instant::now()
    }
    fn print(mut self) {
        self.add(
            "wall_s",
            format!("{:.3}", self.start.elapsed().as_secs_f64()),
        );
        if let Ok(io) = std::fs::read_to_string("/proc/self/io") {
            for line in io.lines() {
                if let Some((k, v)) = line.split_once(':')
                    && matches!(k, "wchar" | "write_bytes" | "cancelled_write_bytes")
                {
                    self.add(k, v.trim());
                }
            }
        }
        if let Ok(st) = std::fs::read_to_string("/proc/self/status") {
            for line in st.lines() {
                if let Some(v) = line.strip_prefix("VmHWM:") {
                    self.add("hwm_kib", v.trim().trim_end_matches(" kB"));
                }
            }
        }
        let s: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("RESULT {}", s.join(" "));
    }
}

fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs() % 100_000, d.subsec_millis())
}

fn say(who: &str, msg: &str) {
    println!("[{}] {who}: {msg}", now());
}

fn store_files(path: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .collect()
}

fn file_len(path: &Path, suffix: &str) -> u64 {
    std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len())
}

fn evict(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    for p in store_files(path) {
        let f = std::fs::File::open(&p).with_context(|| format!("open {}", p.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", p.display()))?;
        // SAFETY: plain syscall on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!("posix_fadvise {}: error {rc}", p.display());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------------

mod sq {
    use super::*;
    use rusqlite::{Connection, OpenFlags, params};

    const COLS: &str =
        "path, size, mtime_ns, mode, uid, gid, tracked, kind, hash, increment, xattrs";

    pub fn open(path: &Path, o: &Opts, create: bool, read_only: bool) -> Result<Connection> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else if create {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let c = Connection::open_with_flags(path, flags)
            .with_context(|| format!("sqlite open {}", path.display()))?;
        // Readers wait briefly for a checkpoint or a DELETE-mode commit rather than failing.
        c.busy_timeout(Duration::from_millis(2000))?;
        if !read_only {
            let mode: String =
                c.query_row(&format!("PRAGMA journal_mode={}", o.journal), [], |r| {
                    r.get(0)
                })?;
            if !mode.eq_ignore_ascii_case(&o.journal) {
                bail!("journal_mode={} asked, SQLite kept {mode}", o.journal);
            }
        }
        c.execute_batch(&format!(
            "PRAGMA synchronous={}; PRAGMA cache_size=-16000;",
            o.sync
        ))?;
        Ok(c)
    }

    fn insert(st: &mut rusqlite::CachedStatement<'_>, key: &[u8], e: &Entry) -> Result<()> {
        st.execute(params![
            key,
            e.size as i64,
            e.mtime_ns,
            e.mode,
            e.uid,
            e.gid,
            e.tracked,
            e.kind,
            &e.hash[..],
            e.increment,
            e.xattrs
        ])?;
        Ok(())
    }

    pub fn init(path: &Path, o: &Opts, n: u64, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let mut c = open(path, o, true, false)?;
        c.execute_batch(
            "CREATE TABLE entries(
                path BLOB PRIMARY KEY NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL,
                uid INTEGER NOT NULL, gid INTEGER NOT NULL, tracked INTEGER NOT NULL,
                kind INTEGER NOT NULL, hash BLOB NOT NULL, increment TEXT, xattrs BLOB
            ) WITHOUT ROWID;",
        )?;
        let t = rep.secs("open_s", t);
        let tx = c.transaction()?;
        let mut rows = 0u64;
        {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO entries({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
            ))?;
            for_each_row(n, |r| {
                insert(&mut st, &r.key, &entry_for(r.id, 0, r.kind))?;
                rows += 1;
                Ok(())
            })?;
        }
        let t = rep.secs("write_s", t);
        tx.commit()?;
        let t = rep.secs("commit_s", t);
        rep.add("wal_bytes", file_len(path, "-wal"));
        c.close().map_err(|(_, e)| e)?;
        rep.secs("close_s", t);
        rep.add("rows", rows);
        rep.add("sqlite_version", rusqlite::version());
        Ok(())
    }

    pub fn scan(path: &Path, o: &Opts, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let c = open(path, o, false, true)?;
        let t = rep.secs("open_s", t);
        let (rows, sum) = count(&c)?;
        rep.secs("op_s", t);
        rep.add("rows", rows);
        rep.add("checksum", format!("{sum:016x}"));
        Ok(())
    }

    fn count(c: &Connection) -> Result<(u64, u64)> {
        let mut st = c.prepare(&format!("SELECT {COLS} FROM entries ORDER BY path"))?;
        let mut rows = st.query([])?;
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(r) = rows.next()? {
            let key = r.get_ref(0)?.as_blob()?;
            let v = View {
                size: r.get_ref(1)?.as_i64()? as u64,
                mtime_ns: r.get_ref(2)?.as_i64()?,
                mode: r.get_ref(3)?.as_i64()? as u32,
                kind: r.get_ref(7)?.as_i64()? as u8,
                hash: r.get_ref(8)?.as_blob()?,
                increment: r.get_ref(9)?.as_str_or_null()?,
                xattrs: r.get_ref(10)?.as_blob_or_null()?,
            };
            let _ = (
                r.get_ref(4)?.as_i64()?,
                r.get_ref(5)?.as_i64()?,
                r.get_ref(6)?,
            );
            sum = fold(sum, key, &v);
            n += 1;
        }
        Ok((n, sum))
    }

    pub fn churn(
        path: &Path,
        o: &Opts,
        pct: f64,
        n: u64,
        run: u64,
        rep: &mut Report,
    ) -> Result<()> {
        let t = Instant::now();
        let mut c = open(path, o, false, false)?;
        let t = rep.secs("open_s", t);
        let tx = c.transaction()?;
        let (mut up, mut ins, mut del) = (0u64, 0u64, 0u64);
        {
            let mut stu = tx.prepare_cached(
                "UPDATE entries SET size=?2, mtime_ns=?3, mode=?4, uid=?5, gid=?6, tracked=?7,
                 kind=?8, hash=?9, increment=?10, xattrs=?11 WHERE path=?1",
            )?;
            let mut sti = tx.prepare_cached(&format!(
                "INSERT INTO entries({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
            ))?;
            let mut std = tx.prepare_cached("DELETE FROM entries WHERE path=?1")?;
            for_each_row(n, |r| {
                let Some(i) = r.file else { return Ok(()) };
                match change_in_run(i, pct, run) {
                    Some(Change::Update) => {
                        insert(&mut stu, &r.key, &entry_for(r.id, 2 * run - 1, 0))?;
                        up += 1;
                    }
                    Some(Change::InsertAfter) => {
                        insert(
                            &mut sti,
                            &new_key(&r.key, run),
                            &entry_for(r.id, 2 * run, 0),
                        )?;
                        ins += 1;
                    }
                    Some(Change::Delete) => {
                        std.execute([&r.key])?;
                        del += 1;
                    }
                    None => {}
                }
                Ok(())
            })?;
        }
        let t = rep.secs("write_s", t);
        let journal = file_len(path, "-journal");
        tx.commit()?;
        let t = rep.secs("commit_s", t);
        // The WAL keeps its high-water size until the last connection closes.
        rep.add("wal_bytes", file_len(path, "-wal"));
        rep.add("journal_bytes", journal);
        c.close().map_err(|(_, e)| e)?;
        rep.secs("close_s", t);
        rep.add("updated", up);
        rep.add("inserted", ins);
        rep.add("deleted", del);
        Ok(())
    }

    pub fn get(path: &Path, o: &Opts, k: u64, n: u64, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let c = open(path, o, false, true)?;
        let t = rep.secs("open_s", t);
        let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM entries WHERE path=?1"))?;
        let mut rng = Rng(SEED ^ 0x6e7);
        let (mut found, mut sum) = (0u64, 0u64);
        for _ in 0..k {
            let key = file_key(rng.next() % n);
            let mut rows = st.query([&key])?;
            if let Some(r) = rows.next()? {
                sum ^= r.get_ref(1)?.as_i64()? as u64 ^ r.get_ref(8)?.as_blob()?[0] as u64;
                found += 1;
            }
        }
        rep.secs("op_s", t);
        rep.add("found", found);
        rep.add("checksum", format!("{sum:016x}"));
        Ok(())
    }

    pub fn children(path: &Path, o: &Opts, dir: &str, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let c = open(path, o, false, true)?;
        let t = rep.secs("open_s", t);
        let lo = dir_prefix(dir);
        let mut hi = lo.clone();
        *hi.last_mut().expect("prefix ends in NUL") = 1;
        let mut st = c.prepare_cached(&format!(
            "SELECT {COLS} FROM entries WHERE path >= ?1 AND path < ?2 ORDER BY path"
        ))?;
        let mut rows = st.query([&lo, &hi])?;
        let mut count = 0u64;
        while let Some(r) = rows.next()? {
            let key = r.get_ref(0)?.as_blob()?;
            if !key[lo.len()..].contains(&0) {
                count += 1;
            }
        }
        rep.secs("op_s", t);
        rep.add("children", count);
        Ok(())
    }

    pub fn hold_write(path: &Path, o: &Opts, secs: u64, n: u64, updates: u64) -> Result<()> {
        let mut c = open(path, o, false, false)?;
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        say(
            "A(sqlite writer)",
            "write transaction open (BEGIN IMMEDIATE)",
        );
        {
            let mut stu = tx.prepare_cached("UPDATE entries SET size=size+1 WHERE path=?1")?;
            for i in 0..updates.min(n) {
                stu.execute([&file_key(i * (n / updates).max(1))])?;
            }
            let mut sti = tx.prepare_cached(&format!(
                "INSERT INTO entries({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)"
            ))?;
            insert(&mut sti, MARKER_KEY, &entry_for(u64::MAX, 0, 0))?;
        }
        say(
            "A(sqlite writer)",
            &format!("{updates} updates + marker written, sleeping {secs}s"),
        );
        std::thread::sleep(Duration::from_secs(secs));
        tx.commit()?;
        say("A(sqlite writer)", "committed");
        c.close().map_err(|(_, e)| e)?;
        Ok(())
    }

    fn marker(c: &Connection) -> Result<bool> {
        let mut st = c.prepare_cached("SELECT 1 FROM entries WHERE path=?1")?;
        Ok(st.exists([MARKER_KEY])?)
    }

    pub fn probe(path: &Path, o: &Opts, follow: Option<u64>) -> Result<()> {
        let t = Instant::now();
        let c = match open(path, o, false, true) {
            Ok(c) => c,
            Err(e) => {
                say("B(sqlite reader)", &format!("open FAILED: {e:#}"));
                return Ok(());
            }
        };
        say("B(sqlite reader)", "opened read-only");
        let report =
            |c: &Connection, what: &str| match count(c).and_then(|(n, _)| Ok((n, marker(c)?))) {
                Ok((n, m)) => say(
                    "B(sqlite reader)",
                    &format!(
                        "{what}: rows={n} marker_present={m} ({:.2}s since open)",
                        t.elapsed().as_secs_f64()
                    ),
                ),
                Err(e) => say("B(sqlite reader)", &format!("{what}: read FAILED: {e:#}")),
            };
        report(&c, "read");
        if let Some(secs) = follow {
            std::thread::sleep(Duration::from_secs(secs));
            report(&c, "read again on the same handle");
        }
        Ok(())
    }

    pub fn hold_read(path: &Path, o: &Opts, secs: u64) -> Result<()> {
        let c = open(path, o, false, !o.rw_handle)?;
        c.execute_batch("BEGIN")?;
        let (n, _) = count(&c)?;
        say(
            "A(sqlite reader)",
            &format!("read transaction open, rows={n}, sleeping {secs}s"),
        );
        std::thread::sleep(Duration::from_secs(secs));
        c.execute_batch("COMMIT")?;
        say("A(sqlite reader)", "read transaction closed");
        Ok(())
    }

    pub fn probe_write(path: &Path, o: &Opts) -> Result<()> {
        let c = match open(path, o, false, false) {
            Ok(c) => c,
            Err(e) => {
                say("C(sqlite writer)", &format!("open FAILED: {e:#}"));
                return Ok(());
            }
        };
        c.busy_timeout(Duration::ZERO)?;
        match c.execute_batch(
            "BEGIN IMMEDIATE; UPDATE entries SET size=size WHERE path=x'00'; COMMIT;",
        ) {
            Ok(()) => say(
                "C(sqlite writer)",
                "opened, write transaction began and committed",
            ),
            Err(e) => say(
                "C(sqlite writer)",
                &format!("opened; write transaction FAILED: {e:#}"),
            ),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// redb
// ---------------------------------------------------------------------------------------------

mod rd {
    use super::*;
    use redb::{
        Builder, ConcurrencyMode, Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
        ReadableTableMetadata, TableDefinition,
    };

    const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

    fn builder(o: &Opts) -> Builder {
        let mut b = Builder::new();
        b.set_cache_size(CACHE_BYTES);
        b.set_concurrency_mode(if o.redb_single {
            ConcurrencyMode::SingleWriter
        } else {
            ConcurrencyMode::ExclusiveWriter
        });
        b
    }

    fn open_rw(path: &Path, o: &Opts) -> Result<Database> {
        builder(o)
            .open(path)
            .with_context(|| format!("redb open {}", path.display()))
    }

    fn open_ro(path: &Path, o: &Opts) -> Result<ReadOnlyDatabase> {
        builder(o)
            .open_read_only(path)
            .with_context(|| format!("redb open read-only {}", path.display()))
    }

    pub fn init(path: &Path, o: &Opts, n: u64, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let db = builder(o)
            .create(path)
            .with_context(|| format!("redb create {}", path.display()))?;
        let t = rep.secs("open_s", t);
        let tx = db.begin_write()?;
        let mut rows = 0u64;
        {
            let mut tab = tx.open_table(ENTRIES)?;
            let mut buf = Vec::with_capacity(256);
            for_each_row(n, |r| {
                encode(&entry_for(r.id, 0, r.kind), &mut buf);
                tab.insert(&r.key[..], &buf[..])?;
                rows += 1;
                Ok(())
            })?;
        }
        let t = rep.secs("write_s", t);
        tx.commit()?;
        let t = rep.secs("commit_s", t);
        db.close()?;
        rep.secs("close_s", t);
        rep.add("rows", rows);
        Ok(())
    }

    fn count(db: &impl ReadableDatabase) -> Result<(u64, u64)> {
        let tx = db.begin_read()?;
        let tab = tx.open_table(ENTRIES)?;
        let (mut n, mut sum) = (0u64, 0u64);
        for item in tab.iter()? {
            let (k, v) = item?;
            let view = decode(v.value())?;
            sum = fold(sum, k.value(), &view);
            n += 1;
        }
        Ok((n, sum))
    }

    pub fn scan(path: &Path, o: &Opts, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let db = open_ro(path, o)?;
        let t = rep.secs("open_s", t);
        let (rows, sum) = count(&db)?;
        rep.secs("op_s", t);
        rep.add("rows", rows);
        rep.add("checksum", format!("{sum:016x}"));
        Ok(())
    }

    pub fn churn(
        path: &Path,
        o: &Opts,
        pct: f64,
        n: u64,
        run: u64,
        rep: &mut Report,
    ) -> Result<()> {
        let t = Instant::now();
        let db = open_rw(path, o)?;
        let t = rep.secs("open_s", t);
        let tx = db.begin_write()?;
        let (mut up, mut ins, mut del) = (0u64, 0u64, 0u64);
        {
            let mut tab = tx.open_table(ENTRIES)?;
            let mut buf = Vec::with_capacity(256);
            for_each_row(n, |r| {
                let Some(i) = r.file else { return Ok(()) };
                match change_in_run(i, pct, run) {
                    Some(Change::Update) => {
                        encode(&entry_for(r.id, 2 * run - 1, 0), &mut buf);
                        if tab.insert(&r.key[..], &buf[..])?.is_none() {
                            bail!("update of a missing key");
                        }
                        up += 1;
                    }
                    Some(Change::InsertAfter) => {
                        encode(&entry_for(r.id, 2 * run, 0), &mut buf);
                        tab.insert(&new_key(&r.key, run)[..], &buf[..])?;
                        ins += 1;
                    }
                    Some(Change::Delete) => {
                        tab.remove(&r.key[..])?;
                        del += 1;
                    }
                    None => {}
                }
                Ok(())
            })?;
        }
        let t = rep.secs("write_s", t);
        tx.commit()?;
        let t = rep.secs("commit_s", t);
        db.close()?;
        rep.secs("close_s", t);
        rep.add("updated", up);
        rep.add("inserted", ins);
        rep.add("deleted", del);
        Ok(())
    }

    pub fn get(path: &Path, o: &Opts, k: u64, n: u64, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let db = open_ro(path, o)?;
        let t = rep.secs("open_s", t);
        let tx = db.begin_read()?;
        let tab = tx.open_table(ENTRIES)?;
        let mut rng = Rng(SEED ^ 0x6e7);
        let (mut found, mut sum) = (0u64, 0u64);
        for _ in 0..k {
            let key = file_key(rng.next() % n);
            if let Some(v) = tab.get(&key[..])? {
                let view = decode(v.value())?;
                sum ^= view.size ^ view.hash[0] as u64;
                found += 1;
            }
        }
        rep.secs("op_s", t);
        rep.add("found", found);
        rep.add("checksum", format!("{sum:016x}"));
        Ok(())
    }

    pub fn children(path: &Path, o: &Opts, dir: &str, rep: &mut Report) -> Result<()> {
        let t = Instant::now();
        let db = open_ro(path, o)?;
        let t = rep.secs("open_s", t);
        let lo = dir_prefix(dir);
        let mut hi = lo.clone();
        *hi.last_mut().expect("prefix ends in NUL") = 1;
        let tx = db.begin_read()?;
        let tab = tx.open_table(ENTRIES)?;
        let mut count = 0u64;
        for item in tab.range::<&[u8]>(&lo[..]..&hi[..])? {
            let (k, v) = item?;
            let _ = decode(v.value())?;
            if !k.value()[lo.len()..].contains(&0) {
                count += 1;
            }
        }
        rep.secs("op_s", t);
        rep.add("children", count);
        Ok(())
    }

    pub fn hold_write(path: &Path, o: &Opts, secs: u64, n: u64, updates: u64) -> Result<()> {
        let db = open_rw(path, o)?;
        say("A(redb writer)", "database opened read-write");
        let tx = db.begin_write()?;
        say("A(redb writer)", "write transaction open");
        {
            let mut tab = tx.open_table(ENTRIES)?;
            let mut buf = Vec::new();
            for i in 0..updates.min(n) {
                let key = file_key(i * (n / updates).max(1));
                encode(&entry_for(i, 7, 0), &mut buf);
                tab.insert(&key[..], &buf[..])?;
            }
            encode(&entry_for(u64::MAX, 0, 0), &mut buf);
            tab.insert(MARKER_KEY, &buf[..])?;
        }
        say(
            "A(redb writer)",
            &format!("{updates} updates + marker written, sleeping {secs}s"),
        );
        std::thread::sleep(Duration::from_secs(secs));
        tx.commit()?;
        say("A(redb writer)", "committed");
        db.close()?;
        Ok(())
    }

    fn marker(db: &impl ReadableDatabase) -> Result<bool> {
        let tx = db.begin_read()?;
        let tab = tx.open_table(ENTRIES)?;
        Ok(tab.get(MARKER_KEY)?.is_some())
    }

    pub fn probe(path: &Path, o: &Opts, follow: Option<u64>) -> Result<()> {
        let t = Instant::now();
        let db = match open_ro(path, o) {
            Ok(db) => db,
            Err(e) => {
                say("B(redb reader)", &format!("read-only open FAILED: {e:#}"));
                return Ok(());
            }
        };
        say("B(redb reader)", "opened read-only");
        let report = |db: &ReadOnlyDatabase, what: &str| match count(db)
            .and_then(|(n, _)| Ok((n, marker(db)?)))
        {
            Ok((n, m)) => say(
                "B(redb reader)",
                &format!(
                    "{what}: rows={n} marker_present={m} ({:.2}s since open)",
                    t.elapsed().as_secs_f64()
                ),
            ),
            Err(e) => say("B(redb reader)", &format!("{what}: read FAILED: {e:#}")),
        };
        report(&db, "read");
        if let Some(secs) = follow {
            std::thread::sleep(Duration::from_secs(secs));
            report(&db, "read again on the same handle");
        }
        Ok(())
    }

    pub fn hold_read(path: &Path, o: &Opts, secs: u64) -> Result<()> {
        if o.rw_handle {
            let db = open_rw(path, o)?;
            let (n, _) = count(&db)?;
            say(
                "A(redb reader)",
                &format!(
                    "opened with Database::open (read-write handle), only reading: rows={n}, sleeping {secs}s"
                ),
            );
            let tx = db.begin_read()?;
            std::thread::sleep(Duration::from_secs(secs));
            drop(tx);
        } else {
            let db = open_ro(path, o)?;
            let (n, _) = count(&db)?;
            say(
                "A(redb reader)",
                &format!("opened with open_read_only: rows={n}, sleeping {secs}s"),
            );
            let tx = db.begin_read()?;
            std::thread::sleep(Duration::from_secs(secs));
            drop(tx);
        }
        say("A(redb reader)", "closed");
        Ok(())
    }

    pub fn probe_write(path: &Path, o: &Opts) -> Result<()> {
        let db = match open_rw(path, o) {
            Ok(db) => db,
            Err(e) => {
                say("C(redb writer)", &format!("read-write open FAILED: {e:#}"));
                return Ok(());
            }
        };
        match db.try_begin_write() {
            Ok(tx) => {
                tx.commit()?;
                say(
                    "C(redb writer)",
                    "opened, write transaction began and committed",
                );
            }
            Err(e) => say(
                "C(redb writer)",
                &format!("opened; write transaction FAILED: {e:#}"),
            ),
        }
        Ok(())
    }

    pub fn stats(path: &Path, o: &Opts, rep: &mut Report) -> Result<()> {
        let db = open_ro(path, o)?;
        let tx = db.begin_read()?;
        let tab = tx.open_table(ENTRIES)?;
        let s = tab.stats()?;
        rep.add("rows", tab.len()?);
        rep.add("stored_bytes", s.stored_bytes());
        rep.add("metadata_bytes", s.metadata_bytes());
        rep.add("fragmented_bytes", s.fragmented_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<()> {
    let mut opts = Opts {
        journal: "wal".into(),
        sync: "full".into(),
        redb_single: false,
        rw_handle: false,
    };
    let mut pos = Vec::new();
    for a in std::env::args().skip(1) {
        if let Some(v) = a.strip_prefix("--journal=") {
            opts.journal = v.to_string();
        } else if let Some(v) = a.strip_prefix("--sync=") {
            opts.sync = v.to_string();
        } else if let Some(v) = a.strip_prefix("--redb-mode=") {
            opts.redb_single = match v {
                "single" => true,
                "exclusive" => false,
                _ => bail!("--redb-mode=exclusive|single"),
            };
        } else if a == "--clustered" {
            CLUSTERED.store(true, std::sync::atomic::Ordering::Relaxed);
        } else if a == "--rw-handle" {
            opts.rw_handle = true;
        } else {
            pos.push(a);
        }
    }
    if pos.len() < 3 {
        bail!("usage: storebench sqlite|redb PATH CMD [ARGS] (see src/main.rs)");
    }
    let store = pos[0].as_str();
    let path = PathBuf::from(&pos[1]);
    let cmd = pos[2].as_str();
    let arg = |i: usize| -> Result<&str> {
        pos.get(3 + i)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{cmd}: missing argument {}", i + 1))
    };
    let num = |i: usize| -> Result<u64> { Ok(arg(i)?.parse()?) };
    let sqlite = match store {
        "sqlite" => true,
        "redb" => false,
        _ => bail!("store must be sqlite or redb"),
    };
    let o = &opts;
    let mut rep = Report::new();
    rep.add("store", store);
    rep.add("op", cmd);
    match cmd {
        "init" => {
            let n = num(0)?;
            if sqlite {
                sq::init(&path, o, n, &mut rep)?
            } else {
                rd::init(&path, o, n, &mut rep)?
            }
        }
        "scan" => {
            if sqlite {
                sq::scan(&path, o, &mut rep)?
            } else {
                rd::scan(&path, o, &mut rep)?
            }
        }
        "churn" => {
            let pct: f64 = arg(0)?.parse()?;
            let n = num(1)?;
            let run = num(2).unwrap_or(1).max(1);
            rep.add("run", run);
            if sqlite {
                sq::churn(&path, o, pct, n, run, &mut rep)?
            } else {
                rd::churn(&path, o, pct, n, run, &mut rep)?
            }
        }
        "get" => {
            let (k, n) = (num(0)?, num(1)?);
            if sqlite {
                sq::get(&path, o, k, n, &mut rep)?
            } else {
                rd::get(&path, o, k, n, &mut rep)?
            }
        }
        "children" => {
            if sqlite {
                sq::children(&path, o, arg(0)?, &mut rep)?
            } else {
                rd::children(&path, o, arg(0)?, &mut rep)?
            }
        }
        "stats" if !sqlite => rd::stats(&path, o, &mut rep)?,
        "hold-write" => {
            let (s, n) = (num(0)?, num(1)?);
            let u = num(2).unwrap_or(10_000).max(1);
            return if sqlite {
                sq::hold_write(&path, o, s, n, u)
            } else {
                rd::hold_write(&path, o, s, n, u)
            };
        }
        "hold-read" => {
            let s = num(0)?;
            return if sqlite {
                sq::hold_read(&path, o, s)
            } else {
                rd::hold_read(&path, o, s)
            };
        }
        "probe" => {
            return if sqlite {
                sq::probe(&path, o, None)
            } else {
                rd::probe(&path, o, None)
            };
        }
        "probe-follow" => {
            let s = Some(num(0)?);
            return if sqlite {
                sq::probe(&path, o, s)
            } else {
                rd::probe(&path, o, s)
            };
        }
        "probe-write" => {
            return if sqlite {
                sq::probe_write(&path, o)
            } else {
                rd::probe_write(&path, o)
            };
        }
        "evict" => return evict(&path),
        _ => bail!("unknown command {cmd}"),
    }
    let sizes: Vec<u64> = store_files(&path)
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    rep.add("db_bytes", sizes.first().copied().unwrap_or(0));
    // Allocated blocks: redb grows its file ahead of use, possibly sparsely.
    let alloc = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).map_or(0, |m| m.blocks() * 512)
    };
    rep.add("db_alloc_bytes", alloc);
    rep.add("aux_bytes", sizes.iter().skip(1).sum::<u64>());
    rep.print();
    Ok(())
}
