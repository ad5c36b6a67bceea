//! Test environment of the `backup-tool` tests: a source tree, a backup of it, and the real
//! `backup-tool` binary.
//!
//! `Env::backup` stands in for the real `backup` until it exists: it writes the repository
//! format of SPEC §2 with the core types, the way the engine does (new/changed tracked files
//! hard-linked into `track/`, deleted ones into `deleted/`, the mirror updated by writing a
//! new file and renaming it over the old one).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use backup_core::format::{CatalogEntry, Category, FileKind, IndexEntry, MTime, Op};
use backup_core::{ContentHash, IncrementMeta, MirrorIndex, RelPath};

/// `target/debug/<name>`, found from the test executable's location (`target/debug/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    loop {
        let cand = dir.join(name);
        if cand.is_file() {
            return cand;
        }
        if !dir.pop() {
            panic!("{name} not built: run `cargo build --workspace` first");
        }
    }
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub src: PathBuf,
    pub dist: PathBuf,
    /// Paths below these (relative) prefixes are untracked; everything else is tracked.
    pub untracked_prefixes: Vec<String>,
    clock: i64,
}

pub fn ns_of(md: &fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let dist = tmp.path().join("dist");
        fs::create_dir_all(&src).unwrap();
        Env {
            tmp,
            src,
            dist,
            untracked_prefixes: vec!["untracked".into()],
            // 2024-01-05 10:00:00 UTC
            clock: 1_704_448_800,
        }
    }

    /// Writes a source file with a fixed mtime (seconds since the epoch).
    pub fn write_at(&self, rel: &str, content: &[u8], mtime_secs: i64) {
        let p = self.src.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs as u64))
            .unwrap();
    }

    pub fn write(&mut self, rel: &str, content: &[u8]) {
        self.clock += 60;
        let t = self.clock;
        self.write_at(rel, content, t);
    }

    pub fn remove(&self, rel: &str) {
        fs::remove_file(self.src.join(rel)).unwrap();
    }

    fn tracked(&self, rel: &RelPath) -> bool {
        let s = rel.display();
        !self
            .untracked_prefixes
            .iter()
            .any(|p| s.starts_with(&format!("{p}/")))
    }

    /// One run of the pipeline; returns the increment it made, if any.
    pub fn backup(&mut self) -> Option<String> {
        self.clock += 3600;
        let when = {
            use chrono::TimeZone;
            chrono::Local.timestamp_opt(self.clock, 0).unwrap()
        };
        let name = format!("backup_{}", when.format("%Y%m%d_%H%M%S"));
        let mirror = self.dist.join("mirror");
        fs::create_dir_all(&mirror).unwrap();
        let index_path = self.dist.join("mirror.json");
        let mut index = if index_path.exists() {
            MirrorIndex::load(&index_path).unwrap().0
        } else {
            MirrorIndex::default()
        };
        let mut seen: BTreeMap<RelPath, ()> = BTreeMap::new();
        let mut meta = IncrementMeta::new(&name, when.to_rfc3339());
        let inc_dir = self.dist.join(&name);
        for e in walkdir::WalkDir::new(&self.src)
            .min_depth(1)
            .sort_by_file_name()
        {
            let e = e.unwrap();
            if e.file_type().is_dir() {
                continue;
            }
            let rel = RelPath::from_path(e.path().strip_prefix(&self.src).unwrap()).unwrap();
            seen.insert(rel.clone(), ());
            let md = e.metadata().unwrap();
            let is_link = e.file_type().is_symlink();
            let data = if is_link {
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(e.path()).unwrap()
            };
            let hash = ContentHash::of(&data);
            let mtime = MTime::from_ns(ns_of(&md));
            let tracked = self.tracked(&rel);
            let old = index.files.get(&rel);
            let op = match old {
                None => Op::New,
                Some(o) if o.size != md.len() || o.mtime != mtime || o.hash != Some(hash) => {
                    Op::Changed
                }
                Some(_) => continue,
            };
            let dest = rel.under(&mirror);
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            let tmp = dest.with_file_name(".incoming");
            if is_link {
                std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &tmp).unwrap();
            } else {
                fs::copy(e.path(), &tmp).unwrap();
                let f = fs::File::options().write(true).open(&tmp).unwrap();
                f.set_modified(md.modified().unwrap()).unwrap();
            }
            fs::rename(&tmp, &dest).unwrap();
            use std::os::unix::fs::MetadataExt;
            let mode = Some(md.mode() & 0o7777);
            let kind = if is_link {
                FileKind::Symlink
            } else {
                FileKind::File
            };
            if tracked {
                let link = rel.under(&inc_dir.join("track"));
                fs::create_dir_all(link.parent().unwrap()).unwrap();
                fs::hard_link(&dest, &link).unwrap();
                meta.file_catalog.insert(
                    rel.clone(),
                    CatalogEntry {
                        size: md.len(),
                        mtime,
                        category: Category::Tracked,
                        op: Some(op),
                        kind,
                        mode,
                        hash: Some(hash),
                        version_of: None,
                    },
                );
            }
            index.files.insert(
                rel,
                IndexEntry {
                    size: md.len(),
                    mtime,
                    tracked,
                    kind,
                    mode,
                    hash: Some(hash),
                    version_of: tracked.then(|| name.clone()),
                },
            );
        }
        let gone: Vec<RelPath> = index
            .files
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for rel in gone {
            let e = index.files.remove(&rel).unwrap();
            let dest = rel.under(&mirror);
            if e.tracked {
                let link = rel.under(&inc_dir.join("deleted"));
                fs::create_dir_all(link.parent().unwrap()).unwrap();
                fs::hard_link(&dest, &link).unwrap();
                meta.file_catalog.insert(
                    rel.clone(),
                    CatalogEntry {
                        size: e.size,
                        mtime: e.mtime,
                        category: Category::Deleted,
                        op: Some(Op::Deleted),
                        kind: e.kind,
                        mode: e.mode,
                        hash: e.hash,
                        version_of: e.version_of.clone(),
                    },
                );
            }
            fs::remove_file(&dest).unwrap();
        }
        let made = if meta.file_catalog.is_empty() {
            None
        } else {
            for e in meta.file_catalog.values() {
                match e.op() {
                    Op::New => meta.summary.new += 1,
                    Op::Changed => meta.summary.changed += 1,
                    Op::Deleted => meta.summary.deleted += 1,
                }
                meta.summary.bytes += e.size;
            }
            fs::write(inc_dir.join(format!("{name}.json")), meta.to_json()).unwrap();
            Some(name)
        };
        index.updated = Some(when.to_rfc3339());
        fs::write(&index_path, index.to_json()).unwrap();
        made
    }

    /// Runs `backup-tool DIST args...`.
    pub fn tool(&self, args: &[&str]) -> Output {
        self.tool_env(args, &[])
    }

    pub fn tool_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = std::process::Command::new(binary("backup-tool"));
        c.arg(&self.dist).args(args).env_remove("NO_COLOR");
        for (k, v) in env {
            c.env(k, v);
        }
        c.current_dir(self.tmp.path());
        c.output().expect("run backup-tool")
    }

    /// Runs and expects exit status `code`; returns stdout.
    pub fn tool_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.tool(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "backup-tool {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    pub fn tool_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.tool_ok(&a, code)).expect("valid JSON")
    }

    pub fn increments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.dist)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("backup_") && !n.ends_with(".json"))
            .collect();
        v.sort();
        v
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// A fingerprint of a whole tree: every entry's path, type, content, mode and mtime (and
/// symlink targets), so a read-only command can be shown to change nothing.
pub fn fingerprint(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        let content = if md.is_file() {
            blake3::hash(&fs::read(e.path()).unwrap())
                .to_hex()
                .to_string()
        } else if md.file_type().is_symlink() {
            fs::read_link(e.path()).unwrap().display().to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            &mut out as &mut dyn std::fmt::Write,
            "{} {:o} {} {} {} {}",
            e.path().display(),
            md.mode(),
            md.mtime(),
            md.mtime_nsec(),
            md.nlink(),
            content
        );
    }
    out
}

/// Writes `text` to `path`, creating folders.
pub fn put(path: &Path, text: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs::File::create(path).unwrap();
    f.write_all(text).unwrap();
}

/// The standard history used by most tests: four increments over a small tree.
///
/// 1. new `projects/a.py` (v1), `projects/b.pdf`, `docs/readme.md`; untracked `untracked/u.txt`
/// 2. `a.py` changed (v2), new `projects/sub/c.py`
/// 3. `b.pdf` deleted, `readme.md` changed
/// 4. `a.py` changed (v3)
pub struct Scenario {
    pub env: Env,
    pub incs: Vec<String>,
}

pub fn scenario() -> Scenario {
    let mut env = Env::new();
    let mut incs = Vec::new();
    env.write("projects/a.py", b"print('v1')\n");
    env.write("projects/b.pdf", &vec![b'%'; 2048]);
    env.write("docs/readme.md", b"# readme v1\n");
    env.write("untracked/u.txt", b"untracked\n");
    incs.push(env.backup().expect("first increment"));
    env.write("projects/a.py", b"print('version two')\n");
    env.write("projects/sub/c.py", b"c = 1\n");
    incs.push(env.backup().expect("second increment"));
    env.remove("projects/b.pdf");
    env.write("docs/readme.md", b"# readme, second edition\n");
    incs.push(env.backup().expect("third increment"));
    env.write("projects/a.py", b"print('v3')\n");
    incs.push(env.backup().expect("fourth increment"));
    Scenario { env, incs }
}
