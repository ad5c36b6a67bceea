//! The index at `dist/.backup-index.sqlite`: the state of the mirror and a catalog of every
//! increment's events, on disk, so that memory does not grow with the number of files and a
//! run writes only what changed (format and reasons in `docs/format.md`, "The index").
//!
//! Why SQLite (measured against redb at 1M rows, `bench/storebench/`): readers in other
//! processes (a mount, `list`) read the last committed state while a backup holds a write
//! transaction for the whole run (WAL mode); the file format has been stable since 2004 and
//! the `sqlite3` command reads it, which matters for a backup drive read years later.
//!
//! Tables:
//! - `mirror`: one row per file, symlink and folder of `mirror/`, keyed by
//!   [`RelPath::sort_key`] (walk order), so a run merge-joins its scan with it in one pass.
//! - `increments`: every increment folder found at `dist`, with its time, counts, and the size
//!   and mtime of the metadata file the rows were read from (a changed file is read again).
//! - `dirs`: the folders of all paths ever cataloged (id, parent, name), with `spans`: the
//!   increments at which the folder holds something.
//! - `events`: the folded timeline of every path (`history::fold_path`): each catalog event
//!   (`origin` 0) and each version another holder keeps (`origin` 1: a `deleted/` link,
//!   2: the mirror), keyed by (folder, name, increment order).
//! - `folders`: folder metadata recorded by each increment.
//! - `problems`: entries of metadata files that could not be used.
//!
//! Everything but `mirror` is derived from the increments' JSON metadata and can be rebuilt
//! from it; `mirror` is rebuilt from `mirror/` and the catalogs' hashes when the file is lost.

mod catalog;
mod codec;
mod mirror_sync;
mod open;
mod query;
mod views;

use std::cell::RefCell;
use std::collections::HashMap;

use crate::identity::IncrementName;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::format::{FormatError, IndexEntry};
use crate::relpath::RelPath;
use crate::repo::Repository;

pub use catalog::{IncrementRecord, IncrementState, SyncReport, Touched};
pub use mirror_sync::Reconciled;
pub use open::{IndexNote, Opened};

pub use query::{HistoryChild, SnapChild, SnapName, SnapNode, Spans};
pub use views::MIRROR_UPDATED;

/// Schema of the tables below; a newer file is refused (never half understood).
pub const SCHEMA: i64 = 1;
/// "BKIX": marks the file as ours for `file(1)` and for us.
const APPLICATION_ID: i64 = 0x424b_4958;

/// The id of the root folder in `dirs`.
pub(crate) const ROOT_DIR: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {op}: {source}")]
    Sql {
        path: String,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "index {path} was written by a newer version of this tool (schema {found}, this one \
         reads {known}); use that version, or delete the file: it is rebuilt from the backup"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{path} is not an index of this tool (application id {found:#x})")]
    Foreign { path: String, found: i64 },
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index {path}: {message}")]
    Corrupt { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, IndexError>;

impl IndexError {
    /// True when the file system holding the index ran out of space (or quota).
    pub fn is_disk_full(&self) -> bool {
        match self {
            IndexError::Sql { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            IndexError::Io { source, .. } => backup_platform::fs::is_disk_full(source),
            _ => false,
        }
    }
}

/// Process-wide SQLite settings, before the first connection: no memory statistics (they put
/// one global mutex around every allocation of every connection: a mount's request threads
/// spent an eighth of their time on it).
fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: called once, before any connection of this process is opened (every
        // connection goes through `open_at`); a failure leaves the default in place.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
        }
    });
}

/// SQLite reports a write into its shared memory or WAL that failed for want of space as a
/// generic I/O error; the errno it saw tells the two apart, so a full disk is called by its
/// name (the user can act on it; "disk I/O error" sends them looking for a broken drive).
fn full_or(conn: &Connection, source: rusqlite::Error) -> rusqlite::Error {
    if source.sqlite_error_code() != Some(rusqlite::ErrorCode::SystemIoFailure) {
        return source;
    }
    // SAFETY: the handle is valid for the connection's life and only read here.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    let err = std::io::Error::from_raw_os_error(errno);
    if errno != 0 && backup_platform::fs::is_disk_full(&err) {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some(format!("the disk is full ({err})")),
        )
    } else {
        source
    }
}

/// How the database journals its transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalMode {
    /// Readers read the last committed state while a run writes (the normal case).
    Wal,
    /// Where WAL cannot work (no shared memory on the file system): readers wait for a
    /// writer's commit.
    Delete,
}

/// Folder ids by path, and paths by id, for the folders touched lately.
pub(crate) struct DirCache {
    by_path: HashMap<Vec<u8>, i64>,
    by_id: HashMap<i64, Option<RelPath>>,
    max: usize,
}

impl Default for DirCache {
    fn default() -> Self {
        DirCache {
            by_path: HashMap::new(),
            by_id: HashMap::new(),
            max: Self::MAX,
        }
    }
}

impl DirCache {
    /// Enough for the folders of a large tree in walk order; cleared beyond that (ids are
    /// only a lookup away).
    const MAX: usize = 200_000;

    fn trim(&mut self) {
        if self.by_path.len() > self.max || self.by_id.len() > self.max {
            self.by_path.clear();
            self.by_id.clear();
        }
    }
}

/// An open index. Not shared between threads: each thread (a mount's request workers, the
/// engine's writer) opens its own; SQLite coordinates them.
pub struct Index {
    conn: Connection,
    path: PathBuf,
    journal: JournalMode,
    dirs: RefCell<DirCache>,
    /// Increment names by row id, for the length of one read (ids of dropped increments can
    /// be reused): a folder listing names the same few increments for every entry.
    inc_names: RefCell<HashMap<i64, Option<IncrementName>>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.path)
            .field("journal", &self.journal)
            .finish()
    }
}

impl Index {
    /// Opens the index of `repo` for reading and writing, creating it when missing.
    pub fn open(repo: &Repository) -> Result<Index> {
        Self::open_at(&repo.index_path(), false)
    }

    /// Opens an existing index without ever writing to it (`None` when there is none).
    pub fn open_read_only(repo: &Repository) -> Result<Option<Index>> {
        let path = repo.index_path();
        if !path.exists() {
            return Ok(None);
        }
        Self::open_at(&path, true).map(Some)
    }

    /// Opens (or creates, unless `read_only`) an index file anywhere: a backup on a read-only
    /// drive gets its index built in a temporary file, through the same code.
    pub fn open_at(path: &Path, read_only: bool) -> Result<Index> {
        configure_library();
        // NOFOLLOW: an index that is a symlink (planted in a copied or hostile backup) is
        // refused, never followed to a database (or any file) outside the backup.
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
        };
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(path, flags).map_err(|source| IndexError::Sql {
            path: shown.clone(),
            op: "open",
            source,
        })?;
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
            journal: JournalMode::Wal,
            dirs: RefCell::new(DirCache::default()),
            inc_names: RefCell::new(HashMap::new()),
        };
        index.configure(read_only)?;
        index.migrate(read_only)?;
        Ok(index)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn set_busy_timeout(&self, t: std::time::Duration) -> Result<()> {
        self.conn
            .busy_timeout(t)
            .map_err(self.err("set busy timeout"))
    }

    /// Sets this connection's page cache (the default is 16 MiB): a reader with several
    /// connections (a mount's request threads) keeps its memory bounded with smaller ones.
    pub fn set_cache_kib(&self, kib: u32) -> Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{kib}"))
            .map_err(self.err("set cache size"))
    }

    /// Bounds the folder ids this connection remembers (default 200,000): a reader with
    /// several connections keeps its memory bounded with fewer.
    pub fn set_dir_cache_max(&self, n: usize) {
        let mut c = self.dirs.borrow_mut();
        c.max = n.max(16);
        c.trim();
    }

    pub fn journal_mode(&self) -> JournalMode {
        self.journal
    }

    pub(crate) fn err(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError + '_ {
        move |source| IndexError::Sql {
            path: self.path.display().to_string(),
            op,
            source: full_or(&self.conn, source),
        }
    }

    /// Forgets remembered increment names (the increments table changed).
    pub(crate) fn forget_increment_names(&self) {
        self.inc_names.borrow_mut().clear();
    }

    pub(crate) fn cached_increment_name(
        &self,
        id: i64,
        load: impl FnOnce() -> Result<Option<IncrementName>>,
    ) -> Result<Option<IncrementName>> {
        if let Some(n) = self.inc_names.borrow().get(&id) {
            return Ok(n.clone());
        }
        let n = load()?;
        let mut c = self.inc_names.borrow_mut();
        if c.len() > 4096 {
            c.clear();
        }
        c.insert(id, n.clone());
        Ok(n)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn configure(&mut self, read_only: bool) -> Result<()> {
        // A writer waits this long for another writer's commit; readers never wait in WAL.
        self.conn
            .busy_timeout(std::time::Duration::from_secs(30))
            .map_err(self.err("set busy timeout"))?;
        // Plans that never depend on bound values: with value-dependent planning (this SQLite
        // is built with STAT4) a statement whose plan consulted a parameter is compiled again
        // at every new binding, which was a tenth of a mount's lookups.
        self.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(self.err("configure"))?;
        // Every query is a cached statement: room for all of them (rusqlite keeps 16 by
        // default; a mount's request thread uses more, and re-preparing each time costs more
        // than the query).
        self.conn.set_prepared_statement_cache_capacity(128);
        // Bounded memory whatever the row count: 16 MiB of page cache.
        self.conn
            .execute_batch("PRAGMA cache_size = -16000; PRAGMA temp_store = FILE;")
            .map_err(self.err("configure"))?;
        if !read_only {
            // FULL: a commit is on disk before it returns (the engine's durability rests on
            // the index commit being the last step of a run).
            self.conn
                .execute_batch("PRAGMA synchronous = FULL;")
                .map_err(self.err("configure"))?;
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(self.err("set journal mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                // The file system cannot share memory between processes (some network
                // shares): a rollback journal still keeps every commit atomic.
                self.conn
                    .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                        r.get::<_, String>(0)
                    })
                    .map_err(self.err("set journal mode"))?;
                self.journal = JournalMode::Delete;
            }
        } else {
            let mode: String = self
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(self.err("read journal mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                self.journal = JournalMode::Delete;
            }
        }
        Ok(())
    }

    fn migrate(&mut self, read_only: bool) -> Result<()> {
        let app: i64 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(self.err("read application id"))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err("read schema version"))?;
        let shown = self.path.display().to_string();
        if app != 0 && app != APPLICATION_ID {
            return Err(IndexError::Foreign {
                path: shown,
                found: app,
            });
        }
        if version > SCHEMA {
            return Err(IndexError::TooNew {
                path: shown,
                found: version,
                known: SCHEMA,
            });
        }
        if version == SCHEMA {
            return Ok(());
        }
        if read_only {
            return Err(IndexError::Corrupt {
                path: shown,
                message: "the index has no tables yet (it is created by the next writer)".into(),
            });
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| IndexError::Sql {
                path: shown.clone(),
                op: "begin schema creation",
                source,
            })?;
        // Another process may have created it while we waited for the lock.
        let again: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| IndexError::Sql {
                path: shown.clone(),
                op: "read schema version",
                source: full_or(&tx, source),
            })?;
        if again == 0 {
            tx.execute_batch(SCHEMA_SQL)
                .map_err(|source| IndexError::Sql {
                    path: shown.clone(),
                    op: "create tables",
                    source: full_or(&tx, source),
                })?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA};"
            ))
            .map_err(|source| IndexError::Sql {
                path: shown.clone(),
                op: "mark schema",
                source: full_or(&tx, source),
            })?;
        }
        tx.commit().map_err(|source| IndexError::Sql {
            path: shown,
            op: "commit schema",
            source: full_or(&self.conn, source),
        })
    }

    /// A value of the `settings` table.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(self.err("read setting"))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO settings(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(self.err("write setting"))
    }

    /// Remembers folders whose metadata changed in a run that made no increment, so the next
    /// increment records them: a history view at that increment must show the folder as it
    /// was then, and the mirror's row (already updated) no longer tells that it changed.
    /// Like the mirror table, this cannot be derived from the increments.
    pub fn pending_folders_add(&self, rels: &[RelPath]) -> Result<()> {
        self.ensure_pending_folders()?;
        let mut s = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO pending_folders(key) VALUES (?1)")
            .map_err(self.err("remember folder change"))?;
        for rel in rels {
            s.execute([rel.sort_key()])
                .map_err(self.err("remember folder change"))?;
        }
        Ok(())
    }

    /// The folders [`Index::pending_folders_add`] remembered (names that cannot be read back
    /// are skipped: the folder's next change records it again).
    pub fn pending_folders(&self) -> Result<Vec<RelPath>> {
        self.ensure_pending_folders()?;
        let mut s = self
            .conn
            .prepare_cached("SELECT key FROM pending_folders ORDER BY key")
            .map_err(self.err("read folder changes"))?;
        let keys = s
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .and_then(|rows| rows.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err("read folder changes"))?;
        Ok(keys
            .iter()
            .filter_map(|k| RelPath::from_sort_key(k).ok())
            .collect())
    }

    /// Forgets the remembered folder changes (an increment recorded them).
    pub fn pending_folders_clear(&self) -> Result<()> {
        self.ensure_pending_folders()?;
        self.conn
            .execute("DELETE FROM pending_folders", [])
            .map(|_| ())
            .map_err(self.err("forget folder changes"))
    }

    /// Indexes of schema 1 made before this table existed get it on first use (older readers
    /// ignore it, so the schema number stays).
    fn ensure_pending_folders(&self) -> Result<()> {
        self.conn
            .prepare_cached(
                "CREATE TABLE IF NOT EXISTS pending_folders(key BLOB PRIMARY KEY) WITHOUT ROWID",
            )
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(self.err("create pending_folders"))
    }

    /// Starts a write transaction (IMMEDIATE: it holds the write lock from the start, so two
    /// writers never deadlock half-way). Everything until [`Index::commit`] is invisible to
    /// readers, which keep reading the last committed state.
    pub fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(self.err("begin"))
    }

    /// Runs `f` on one consistent state of the index: its queries all see the same commit,
    /// even if a writer commits meanwhile (a snapshot read in WAL mode; it never blocks the
    /// writer). Answers made of several queries (a folder listing, then the names of the
    /// increments it refers to) must go through here.
    pub fn read<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        if self.in_transaction() {
            return f(self);
        }
        self.conn
            .prepare_cached("BEGIN DEFERRED")
            .and_then(|mut s| s.execute([]))
            .map_err(self.err("begin a read"))?;
        self.inc_names.borrow_mut().clear();
        let out = f(self);
        // A read has nothing to commit; ending it lets checkpoints move on.
        let _ = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]));
        out
    }

    pub fn commit(&self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(self.err("commit"))?;
        // Fold the WAL back into the file now that the run is recorded, so it does not grow
        // run after run; readers still on an older state just make it partial.
        if self.journal == JournalMode::Wal {
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        Ok(())
    }

    pub fn rollback(&self) -> Result<()> {
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(self.err("rollback"))
    }

    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// The id of folder `dir` (`None` = the root), if any path below it was ever cataloged.
    pub(crate) fn dir_id(&self, dir: Option<&RelPath>) -> Result<Option<i64>> {
        let Some(dir) = dir else {
            return Ok(Some(ROOT_DIR));
        };
        if let Some(&id) = self.dirs.borrow().by_path.get(dir.as_bytes()) {
            return Ok(Some(id));
        }
        let parent = match self.dir_id(dir.parent().as_ref())? {
            Some(p) => p,
            None => return Ok(None),
        };
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM dirs WHERE parent = ?1 AND name = ?2")
            .and_then(|mut s| {
                s.query_row(params![parent, dir.file_name()], |r| r.get(0))
                    .optional()
            })
            .map_err(self.err("look up folder"))?;
        if let Some(id) = id {
            let mut c = self.dirs.borrow_mut();
            c.trim();
            c.by_path.insert(dir.as_bytes().to_vec(), id);
        }
        Ok(id)
    }

    /// The id of folder `dir`, creating its row (and its parents') when missing.
    pub(crate) fn dir_id_create(&self, dir: Option<&RelPath>) -> Result<i64> {
        if let Some(id) = self.dir_id(dir)? {
            return Ok(id);
        }
        let dir = dir.expect("the root always exists");
        let parent = self.dir_id_create(dir.parent().as_ref())?;
        self.conn
            .prepare_cached("INSERT INTO dirs(parent, name, depth) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![parent, dir.file_name(), dir.depth() as i64]))
            .map_err(self.err("add folder"))?;
        let id = self.conn.last_insert_rowid();
        let mut c = self.dirs.borrow_mut();
        c.trim();
        c.by_path.insert(dir.as_bytes().to_vec(), id);
        c.by_id.insert(id, Some(dir.clone()));
        Ok(id)
    }

    /// The path of folder `id` (`None` for the root).
    pub(crate) fn dir_path(&self, id: i64) -> Result<Option<RelPath>> {
        if id == ROOT_DIR {
            return Ok(None);
        }
        if let Some(p) = self.dirs.borrow().by_id.get(&id) {
            return Ok(p.clone());
        }
        let (parent, name): (i64, Vec<u8>) = self
            .conn
            .prepare_cached("SELECT parent, name FROM dirs WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(self.err("read folder"))?;
        let path = match self.dir_path(parent)? {
            Some(p) => p.join(&name),
            None => RelPath::from_bytes(&name),
        }
        .map_err(|e| IndexError::Corrupt {
            path: self.path.display().to_string(),
            message: format!("folder {id}: {e}"),
        })?;
        let mut c = self.dirs.borrow_mut();
        c.trim();
        c.by_id.insert(id, Some(path.clone()));
        Ok(Some(path))
    }

    /// Forgets cached folder ids (after a rollback made some of them refer to nothing).
    pub(crate) fn forget_dirs(&self) {
        let mut c = self.dirs.borrow_mut();
        let max = c.max;
        *c = DirCache::default();
        c.max = max;
    }

    // ---- the mirror ----

    /// The mirror's entry for `rel`.
    pub fn mirror_get(&self, rel: &RelPath) -> Result<Option<IndexEntry>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {} FROM mirror WHERE key = ?1",
                codec::MIRROR_COLUMNS
            ))
            .and_then(|mut s| s.query_row([rel.sort_key()], codec::mirror_row).optional())
            .map_err(self.err("read mirror entry"))
    }

    /// Up to `limit` mirror entries after `after` (a sort key; `None`: from the start), in
    /// walk order. Consecutive pages inside one read transaction see one state.
    pub fn mirror_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(RelPath, IndexEntry)>> {
        let sql = format!(
            "SELECT key, {} FROM mirror WHERE key > ?1 ORDER BY key LIMIT ?2",
            codec::MIRROR_COLUMNS
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(self.err("read mirror"))?;
        let rows = stmt
            .query_map(params![after.unwrap_or(b""), limit as i64], |r| {
                let key: Vec<u8> = r.get(0)?;
                Ok((key, codec::mirror_row_at(r, 1)?))
            })
            .map_err(self.err("read mirror"))?;
        let mut out = Vec::with_capacity(limit.min(4096));
        for row in rows {
            let (key, e) = row.map_err(self.err("read mirror"))?;
            let rel = RelPath::from_sort_key(&key).map_err(|e| IndexError::Corrupt {
                path: self.path.display().to_string(),
                message: format!("mirror key {}: {e}", String::from_utf8_lossy(&key)),
            })?;
            out.push((rel, e));
        }
        Ok(out)
    }

    /// Every mirror entry in walk order, a page at a time (memory stays bounded).
    pub fn mirror_entries(&self) -> MirrorEntries<'_> {
        MirrorEntries {
            index: self,
            after: None,
            page: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Records `rel` in the mirror (replacing what was there).
    pub fn mirror_put(&self, rel: &RelPath, e: &IndexEntry) -> Result<()> {
        let sql = format!(
            "INSERT OR REPLACE INTO mirror(key, {}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            codec::MIRROR_COLUMNS
        );
        let v = codec::MirrorValues::of(e);
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.execute(params![
                    rel.sort_key(),
                    v.kind,
                    v.size,
                    v.mtime_ns,
                    v.mode,
                    v.uid,
                    v.gid,
                    v.tracked,
                    v.hash,
                    v.version_of,
                    v.extra,
                    v.ctime_ns
                ])
            })
            .map(|_| ())
            .map_err(self.err("write mirror entry"))
    }

    pub fn mirror_remove(&self, rel: &RelPath) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM mirror WHERE key = ?1")
            .and_then(|mut s| s.execute([rel.sort_key()]))
            .map(|_| ())
            .map_err(self.err("remove mirror entry"))
    }

    /// Empties the mirror table (before a rebuild or an import).
    pub fn mirror_clear(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM mirror", [])
            .map(|_| ())
            .map_err(self.err("clear mirror"))
    }

    /// Files (and symlinks), tracked ones, and their bytes, in the mirror.
    pub fn mirror_totals(&self) -> Result<MirrorTotals> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(tracked), 0), CAST(min(total(size), 9.0e18) AS INTEGER)
                 FROM mirror WHERE kind != 2",
                [],
                |r| {
                    Ok(MirrorTotals {
                        files: r.get::<_, i64>(0)? as u64,
                        tracked: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .map_err(self.err("count mirror"))
    }

    /// Whether the mirror table holds anything.
    pub fn mirror_is_empty(&self) -> Result<bool> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM mirror)", [], |r| r.get(0))
            .map_err(self.err("read mirror"))
    }
}

/// Counts of the mirror for `list`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MirrorTotals {
    pub files: u64,
    pub tracked: u64,
    pub bytes: u64,
}

/// See [`Index::mirror_entries`].
pub struct MirrorEntries<'a> {
    index: &'a Index,
    after: Option<Vec<u8>>,
    page: std::collections::VecDeque<(RelPath, IndexEntry)>,
    done: bool,
}

impl Iterator for MirrorEntries<'_> {
    type Item = Result<(RelPath, IndexEntry)>;
    fn next(&mut self) -> Option<Self::Item> {
        const PAGE: usize = 2048;
        if self.page.is_empty() && !self.done {
            match self.index.mirror_page(self.after.as_deref(), PAGE) {
                Ok(p) => {
                    self.done = p.len() < PAGE;
                    if let Some((last, _)) = p.last() {
                        self.after = Some(last.sort_key());
                    }
                    self.page = p.into();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.page.pop_front().map(Ok)
    }
}

const SCHEMA_SQL: &str = "
CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;

CREATE TABLE mirror(
    key BLOB PRIMARY KEY,          -- path with '/' as NUL: walk order
    kind INTEGER NOT NULL,         -- 0 file, 1 symlink, 2 folder
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER,                  -- st_mode & 0o7777
    uid INTEGER,
    gid INTEGER,
    tracked INTEGER NOT NULL,
    hash BLOB,                     -- blake3 of the content (of the target for a symlink)
    version_of TEXT,               -- the increment whose track/ holds this same version
    extra TEXT,                    -- JSON: user, group, xattrs, sparse, hardlink_of
    ctime_ns INTEGER               -- the source's ctime when recorded (not part of a version)
) WITHOUT ROWID;

CREATE TABLE increments(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ord BLOB NOT NULL UNIQUE,      -- IncrementName::sort_key: the order of increments
    time_ns INTEGER NOT NULL,      -- UTC
    utc_offset INTEGER NOT NULL,   -- seconds east of UTC, as recorded
    time_source TEXT NOT NULL,     -- recorded | recorded-local | name
    timestamp TEXT,                -- as the metadata wrote it
    meta_len INTEGER,              -- the metadata file these rows were read from
    meta_mtime_ns INTEGER,
    state TEXT NOT NULL,           -- ok | no-metadata | unreadable
    problem TEXT,
    files INTEGER NOT NULL DEFAULT 0,
    new INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    folders INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE dirs(
    id INTEGER PRIMARY KEY,
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    depth INTEGER NOT NULL,        -- 0 for the root
    spans BLOB,                    -- increments (order ranges) at which something below exists
    UNIQUE(parent, name)
);
CREATE INDEX dirs_by_depth ON dirs(depth);
INSERT INTO dirs(id, parent, name, depth) VALUES (1, 0, x'', 0);

CREATE TABLE events(
    dir INTEGER NOT NULL,
    name BLOB NOT NULL,
    ord BLOB NOT NULL,             -- when, in increment order (x'' = unknown, before all)
    inc INTEGER NOT NULL,          -- the increment recording it, or keeping it (0: the mirror)
    origin INTEGER NOT NULL,       -- 0 cataloged; 1 kept by a deleted/ link; 2 kept by the mirror
    category INTEGER NOT NULL,     -- 0 tracked (present), 1 deleted (absent)
    op INTEGER,                    -- 0 new, 1 changed, 2 deleted; NULL: not recorded
    kind INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    hash BLOB,
    version_of TEXT,
    extra TEXT,
    PRIMARY KEY(dir, name, ord)
) WITHOUT ROWID;
CREATE INDEX events_by_inc ON events(inc, origin);

CREATE TABLE folders(
    dir INTEGER NOT NULL,
    ord BLOB NOT NULL,
    inc INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    extra TEXT,
    PRIMARY KEY(dir, ord)
) WITHOUT ROWID;
CREATE INDEX folders_by_inc ON folders(inc);

CREATE TABLE problems(
    inc INTEGER NOT NULL,
    key TEXT,
    message TEXT NOT NULL
);
CREATE INDEX problems_by_inc ON problems(inc);

CREATE TABLE pending_folders(key BLOB PRIMARY KEY) WITHOUT ROWID;
";
