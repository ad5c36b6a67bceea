//! Backups written file by file with the core types, for the mount tests: the layout of
//! `docs/format.md` (mirror updated by rename, increments as hard links, metadata JSON) plus the model
//! of what every point in time holds, to compare the mounted views against.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use backup_core::{
    CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, IncrementName, IndexEntry, MTime,
    MirrorIndex, Op, RelPath,
};

/// One tracked file as the model knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    pub content: Vec<u8>,
    pub mtime_ns: i64,
    pub mode: u32,
}

/// A change applied by one backup run.
pub enum Change<'a> {
    Write(&'a str, &'a [u8]),
    WriteMode(&'a str, &'a [u8], u32),
    Delete(&'a str),
}

pub struct FixtureBackup {
    pub dist: PathBuf,
    index: MirrorIndex,
    current: BTreeMap<String, (ModelFile, String)>,
    /// The tracked files right after each increment, oldest first.
    pub states: Vec<(String, BTreeMap<String, ModelFile>)>,
    stored: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    clock: i64,
}

fn set_mtime(p: &Path, ns: i64) {
    let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
    let f = fs::File::options()
        .write(true)
        .open(p)
        .expect("open for mtime");
    f.set_modified(t).expect("set mtime");
}

impl FixtureBackup {
    pub fn new(dist: &Path) -> Self {
        fs::create_dir_all(dist.join("mirror")).expect("mirror dir");
        FixtureBackup {
            dist: dist.to_path_buf(),
            index: MirrorIndex::default(),
            current: BTreeMap::new(),
            states: Vec::new(),
            stored: BTreeMap::new(),
            clock: 1_700_000_000_123_456_789,
        }
    }

    /// Runs one "backup" named `name` (`backup_YYYYMMDD_HHMMSS`) applying `changes`.
    pub fn backup(&mut self, name: &str, changes: &[Change<'_>]) {
        let iname = IncrementName::parse(name).expect("increment name");
        let inc_dir = self.dist.join(name);
        fs::create_dir_all(&inc_dir).expect("increment dir");
        // Recorded as a real run records it: the local time its name encodes, with the offset.
        let time = backup_core::identity::IncrementTime::of(None, &iname);
        let mut meta = IncrementMeta::new(name, time.at.to_rfc3339());
        for ch in changes {
            match *ch {
                Change::Write(p, data) => self.write(&iname, &mut meta, p, data, 0o644),
                Change::WriteMode(p, data, mode) => self.write(&iname, &mut meta, p, data, mode),
                Change::Delete(p) => {
                    let rel = RelPath::parse(p).expect("path");
                    let (file, start) = self.current.remove(p).expect("deleting a known file");
                    let mirror = rel.under(&self.dist.join("mirror"));
                    let dst = rel.under(&inc_dir.join("deleted"));
                    fs::create_dir_all(dst.parent().expect("parent")).expect("deleted dir");
                    fs::hard_link(&mirror, &dst).expect("link deleted");
                    fs::remove_file(&mirror).expect("remove from mirror");
                    self.index.files.remove(&rel);
                    meta.file_catalog.insert(
                        rel,
                        CatalogEntry {
                            size: file.content.len() as u64,
                            mtime: MTime::from_ns(file.mtime_ns),
                            category: Category::Deleted,
                            op: Some(Op::Deleted),
                            kind: FileKind::File,
                            mode: Some(file.mode),
                            hash: Some(ContentHash::of(&file.content)),
                            version_of: backup_core::IncrementName::parse(&start),
                            attrs: Default::default(),
                        },
                    );
                    meta.summary.deleted += 1;
                }
            }
        }
        fs::write(inc_dir.join(format!("{name}.json")), meta.to_json()).expect("meta");
        fs::write(self.dist.join("mirror.json"), self.index.to_json()).expect("index");
        let state = self
            .current
            .iter()
            .map(|(k, (f, _))| (k.clone(), f.clone()))
            .collect();
        self.states.push((name.to_owned(), state));
    }

    fn write(
        &mut self,
        name: &IncrementName,
        meta: &mut IncrementMeta,
        p: &str,
        data: &[u8],
        mode: u32,
    ) {
        self.clock += 1_000_000_007;
        let rel = RelPath::parse(p).expect("path");
        let mirror = rel.under(&self.dist.join("mirror"));
        fs::create_dir_all(mirror.parent().expect("parent")).expect("mirror parent");
        // Never write into an existing inode: older increments link to it.
        let tmp = mirror.with_file_name(".fixture-tmp");
        fs::write(&tmp, data).expect("write");
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).expect("chmod");
        set_mtime(&tmp, self.clock);
        fs::rename(&tmp, &mirror).expect("rename");
        let dst = rel.under(&self.dist.join(name.as_str()).join("track"));
        fs::create_dir_all(dst.parent().expect("parent")).expect("track dir");
        fs::hard_link(&mirror, &dst).expect("link track");
        let op = if self.current.contains_key(p) {
            Op::Changed
        } else {
            Op::New
        };
        let file = ModelFile {
            content: data.to_vec(),
            mtime_ns: self.clock,
            mode,
        };
        meta.file_catalog.insert(
            rel.clone(),
            CatalogEntry {
                size: data.len() as u64,
                mtime: MTime::from_ns(self.clock),
                category: Category::Tracked,
                op: Some(op),
                kind: FileKind::File,
                mode: Some(mode),
                hash: Some(ContentHash::of(data)),
                version_of: None,
                attrs: Default::default(),
            },
        );
        match op {
            Op::New => meta.summary.new += 1,
            _ => meta.summary.changed += 1,
        }
        meta.summary.bytes += data.len() as u64;
        self.index.files.insert(
            rel,
            IndexEntry {
                size: data.len() as u64,
                mtime: MTime::from_ns(self.clock),
                tracked: true,
                kind: FileKind::File,
                mode: Some(mode),
                hash: Some(ContentHash::of(data)),
                version_of: Some(name.clone()),
                attrs: Default::default(),
                ctime_ns: Default::default(),
            },
        );
        self.stored
            .entry(p.to_owned())
            .or_default()
            .push((name.to_string(), data.to_vec()));
        self.current.insert(p.to_owned(), (file, name.to_string()));
    }

    /// An untracked file: only in the mirror, never in an increment or snapshot.
    pub fn untracked(&mut self, p: &str, data: &[u8]) {
        let rel = RelPath::parse(p).expect("path");
        let mirror = rel.under(&self.dist.join("mirror"));
        fs::create_dir_all(mirror.parent().expect("parent")).expect("mirror parent");
        fs::write(&mirror, data).expect("write");
        self.index.files.insert(
            rel,
            IndexEntry {
                size: data.len() as u64,
                mtime: MTime::from_ns(0),
                tracked: false,
                kind: FileKind::File,
                mode: Some(0o644),
                hash: None,
                version_of: None,
                attrs: Default::default(),
                ctime_ns: Default::default(),
            },
        );
        fs::write(self.dist.join("mirror.json"), self.index.to_json()).expect("index");
    }

    /// Every stored version of `p`, oldest first, with the increment that stored it.
    pub fn versions(&self, p: &str) -> Vec<(String, Vec<u8>)> {
        self.stored.get(p).cloned().unwrap_or_default()
    }
}

/// A backup as the original Python tool wrote it: flat `mirror.json`, metadata without `op`,
/// category `track`, float mtimes.
pub fn write_python_backup(dist: &Path) {
    let inc = "backup_20240105_100000";
    fs::create_dir_all(dist.join("mirror/docs")).expect("mirror");
    fs::create_dir_all(dist.join(inc).join("track/docs")).expect("track");
    fs::write(dist.join("mirror/docs/a.txt"), b"python version A").expect("a");
    fs::write(dist.join("mirror/notes.md"), b"untracked notes").expect("notes");
    fs::hard_link(
        dist.join("mirror/docs/a.txt"),
        dist.join(inc).join("track/docs/a.txt"),
    )
    .expect("link");
    set_mtime(&dist.join("mirror/docs/a.txt"), 1_704_448_800_500_000_000);
    let meta = serde_json::json!({
        "version": "1.0",
        "timestamp": "2024-01-05T10:00:00",
        "backup_name": inc,
        "file_catalog": {
            "docs/a.txt": {"size": 16, "mtime": 1704448800.5, "category": "track"}
        },
        "summary": {"tracked_files": 1, "deleted_files": 0}
    });
    fs::write(
        dist.join(inc).join(format!("{inc}.json")),
        serde_json::to_vec_pretty(&meta).expect("json"),
    )
    .expect("meta");
    let index = serde_json::json!({
        "docs/a.txt": {"size": 16, "mtime": 1704448800.5, "tracked": true},
        "notes.md": {"size": 15, "mtime": 1704448800.0, "tracked": false}
    });
    fs::write(
        dist.join("mirror.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("index");
}
