//! Test environment shared by the end-to-end tests: temporary source trees, config files, and
//! the real `backup` / `backup-tool` binaries.
//!
//! ```no_run
//! use backup_tests::{TestEnv, tree};
//! let env = TestEnv::new();
//! env.write("docs/a.txt", b"hello");
//! env.config(serde_json::json!({"track_dirs": ["docs"]}));
//! env.backup_ok(&[]);
//! assert_eq!(tree(&env.src), tree(&env.mirror()));
//! ```
//!
//! Binaries: the tests live in `cli/tests`, integration tests of the package that defines
//! `backup` and `backup-tool`, so Cargo builds both before any test runs and names them in
//! `CARGO_BIN_EXE_<name>` (see [`bin`]); nothing here ever runs `cargo build`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use serde_json;

/// The workspace binary `name` (`backup` or `backup-tool`), in this order:
///
/// 1. `FAULTS_BIN_DIR/<name>` when that is set: the campaign scripts run a frozen copy, so
///    rebuilding the workspace meanwhile cannot change what is tested;
/// 2. `CARGO_BIN_EXE_<name>`, which Cargo sets for the integration tests of `backup-cli`
///    (at run time as well as at compile time);
/// 3. next to the test executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`),
///    where Cargo put the binaries it built for those same tests: for a Cargo that sets
///    `CARGO_BIN_EXE_*` at compile time only, or a test executable started by hand.
pub fn bin(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("FAULTS_BIN_DIR") {
        return PathBuf::from(d).join(name);
    }
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the end-to-end tests through `cargo test -p backup-cli`, which builds it",
        path.display()
    );
    path
}

/// The one environment of the end-to-end tests: a temporary folder with `src/` (the source
/// tree), a `dist` path (not created), a config file path and an isolated home.
///
/// Every command it starts ([`TestEnv::command`]) runs in that folder with `HOME` and the XDG
/// base folders inside it (`home/`, not created) and no `RUST_LOG`, so nothing of the engineer's
/// own profile or settings is seen. [`TestEnv::expect`] and the `*_ok` helpers report a
/// failure the way ripgrep's harness does: the command, the working folder, a listing of it,
/// the exit status and both outputs.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dist: PathBuf,
    pub config_path: PathBuf,
    /// `HOME` of every command: `dir/home` (the XDG folders below it).
    pub home: PathBuf,
    /// For [`TestEnv::backup_all`]: top-level folders included untracked; every other one is
    /// tracked.
    pub untracked_prefixes: Vec<String>,
    /// The mtime [`TestEnv::write_next`] gives the next file (seconds since the epoch).
    clock: std::cell::Cell<i64>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir src");
        let dist = dir.path().join("dist");
        let config_path = dir.path().join("config.json");
        let home = dir.path().join("home");
        TestEnv {
            dir,
            src,
            dist,
            config_path,
            home,
            untracked_prefixes: vec!["untracked".into()],
            // 2024-01-05 10:00:00 UTC
            clock: std::cell::Cell::new(1_704_448_800),
        }
    }

    /// Same, with `dist` somewhere else (a tmpfs or exFAT mount).
    pub fn with_dist(dist: PathBuf) -> Self {
        let mut env = Self::new();
        env.dist = dist;
        env
    }

    /// `rel` under the environment's folder.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn mirror(&self) -> PathBuf {
        self.dist.join("mirror")
    }

    /// Writes the config: `src`, `dist` and the given rule keys.
    pub fn config(&self, rules: serde_json::Value) {
        let mut v = serde_json::json!({
            "src": self.src,
            "dist": self.dist,
        });
        if let (Some(m), serde_json::Value::Object(r)) = (v.as_object_mut(), rules) {
            m.extend(r);
        }
        std::fs::write(&self.config_path, serde_json::to_vec_pretty(&v).unwrap())
            .expect("write config");
    }

    /// Writes a source file (parents created) and returns its path.
    pub fn write(&self, rel: impl AsRef<Path>, data: &[u8]) -> PathBuf {
        let p = self.src.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        // Replace rather than write in place, like editors do; either must work.
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).expect("write source file");
        p
    }

    /// Writes a source file (in place, parents created) with a fixed mtime (seconds since the
    /// epoch).
    pub fn write_at(&self, rel: &str, content: &[u8], mtime_secs: i64) {
        let p = self.src.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs as u64))
            .unwrap();
    }

    /// [`TestEnv::write_at`] a minute after the previous such write (the first at
    /// 2024-01-05 10:01 UTC): histories with distinct, reproducible mtimes.
    pub fn write_next(&self, rel: &str, content: &[u8]) {
        self.clock.set(self.clock.get() + 60);
        self.write_at(rel, content, self.clock.get());
    }

    /// Writes a source file whose name is raw bytes (non-UTF-8 allowed).
    pub fn write_raw(&self, dir: &str, name: &[u8], data: &[u8]) -> PathBuf {
        let d = self.src.join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        let p = d.join(OsStr::from_bytes(name));
        std::fs::write(&p, data).expect("write source file");
        p
    }

    pub fn remove(&self, rel: impl AsRef<Path>) {
        std::fs::remove_file(self.src.join(rel)).expect("remove source file");
    }

    /// The binary `name` ([`bin`]) set up to run in this environment: working folder `dir`,
    /// `HOME` and the XDG base folders under `dir/home`, no `RUST_LOG`.
    pub fn command(&self, name: &str) -> Command {
        let mut c = Command::new(bin(name));
        c.current_dir(self.dir.path())
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `cmd` and expects exit status `code` (`None`: killed by a signal); on anything else
    /// panics with the command, the working folder, its listing, the status and both outputs.
    pub fn expect(&self, cmd: &mut Command, code: Option<i32>) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
        if out.status.code() != code {
            panic!(
                "{}",
                self.report(cmd, &out, &format!("expected exit status {code:?}"))
            );
        }
        out
    }

    /// The failure report of [`TestEnv::expect`], for callers that check something else.
    pub fn report(&self, cmd: &Command, out: &Output, what: &str) -> String {
        let cwd = cmd
            .get_current_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        let listing: Vec<String> = self
            .listing()
            .iter()
            .take(200)
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "\n\n==========\ncommand: {cmd:?}\n\ncwd: {}\n\ndir list: {listing:?}\n\n{what}, got {:?}\n\nstdout:\n{}\n\nstderr:\n{}\n==========\n",
            cwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Everything under the environment's folder (relative paths, sorted; symlinks not
    /// followed).
    pub fn listing(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, root, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out.sort();
        out
    }

    /// `backup --config <config> ARGS`, not yet run.
    pub fn backup_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.command("backup");
        c.arg("--config").arg(&self.config_path).args(args);
        c
    }

    /// Runs `backup --config <config> ARGS`.
    pub fn backup(&self, args: &[&str]) -> Output {
        self.backup_cmd(args).output().expect("run backup")
    }

    /// Runs `backup --config <config> ARGS` with extra environment variables (a time zone, a
    /// faked clock: see [`clock_at`]).
    pub fn backup_env(&self, env: &[(String, String)], args: &[&str]) -> Output {
        self.backup_cmd(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run backup")
    }

    /// Runs `backup` and asserts exit status 0; returns stdout.
    pub fn backup_ok(&self, args: &[&str]) -> String {
        let out = self.expect(&mut self.backup_cmd(args), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `backup --json` successfully and parses the summary.
    pub fn backup_json(&self) -> serde_json::Value {
        let s = self.backup_ok(&["--json", "-q"]);
        serde_json::from_str(&s).expect("summary JSON")
    }

    /// One run of `backup -q` over the whole source tree, asserted to succeed: every
    /// top-level folder tracked but those named in `untracked_prefixes`, which are included
    /// untracked (the config is rewritten for each run). Returns the increment it made.
    pub fn backup_all(&self) -> Option<String> {
        let mut track = Vec::new();
        let mut include = Vec::new();
        for e in std::fs::read_dir(&self.src).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if self.untracked_prefixes.contains(&n) {
                include.push(n);
            } else {
                track.push(n);
            }
        }
        self.config(serde_json::json!({"track_dirs": track, "include_dirs": include}));
        let before = self.increments();
        self.expect(&mut self.backup_cmd(&["-q"]), Some(0));
        self.increments().into_iter().find(|n| !before.contains(n))
    }

    /// Runs `backup-tool ARGS` (no implicit backup path).
    pub fn tool(&self, args: &[&str]) -> Output {
        self.command("backup-tool")
            .args(args)
            .output()
            .expect("run backup-tool")
    }

    /// Runs `backup-tool DIST ARGS` with extra environment variables.
    pub fn tool_env(&self, env: &[(String, String)], args: &[&str]) -> Output {
        self.command("backup-tool")
            .arg(&self.dist)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run backup-tool")
    }

    /// `backup-tool DIST ARGS` with `NO_COLOR` unset, not yet run.
    pub fn tool_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.command("backup-tool");
        c.arg(&self.dist).args(args).env_remove("NO_COLOR");
        c
    }

    /// Runs `backup-tool DIST ARGS` (`NO_COLOR` unset).
    pub fn tool_dist(&self, args: &[&str]) -> Output {
        self.tool_cmd(args).output().expect("run backup-tool")
    }

    /// Runs `backup-tool DIST ARGS` (`NO_COLOR` unset) with extra environment variables.
    pub fn tool_dist_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.tool_cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run backup-tool")
    }

    /// Runs `backup-tool DIST ARGS` and expects exit status `code`; returns stdout.
    pub fn tool_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.expect(&mut self.tool_cmd(args), Some(code));
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// [`TestEnv::tool_ok`] with `--json` appended, parsed.
    pub fn tool_json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.tool_ok(&a, code)).expect("valid JSON")
    }

    /// Mounts the backup at `dir` with `backup-tool DIST mount DIR EXTRA` (unmounted on drop).
    pub fn mount(&self, dir: &Path, extra: &[&str]) -> mount::MountedBackup {
        mount::MountedBackup::start_with(&self.dist, dir, extra)
    }

    /// Increment folder names at `dist`, sorted.
    pub fn increments(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dist)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| n.starts_with("backup_"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The mirror's state as the index records it, in the `mirror.json` shape
    /// (`{"files": {path: entry}}`), read through `backup-tool export-mirror-json -`.
    pub fn mirror_state(&self) -> serde_json::Value {
        let mut c = self.command("backup-tool");
        c.arg(&self.dist).args(["export-mirror-json", "-"]);
        let out = self.expect(&mut c, Some(0));
        serde_json::from_slice(&out.stdout).expect("mirror state JSON")
    }

    /// Every byte of the index files (the database and its WAL), to prove a run wrote nothing.
    pub fn index_bytes(&self) -> Vec<(String, Vec<u8>)> {
        ["", "-wal"]
            .iter()
            .map(|ext| {
                let p = self.dist.join(format!(".backup-index.sqlite{ext}"));
                (ext.to_string(), std::fs::read(&p).unwrap_or_default())
            })
            .collect()
    }

    /// The metadata JSON of one increment.
    pub fn increment_meta(&self, name: &str) -> serde_json::Value {
        let p = self.dist.join(name).join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(&p).expect("read increment metadata"))
            .expect("increment metadata JSON")
    }
}

/// The standard history of the `backup-tool` tests: four increments over a small tree.
///
/// 1. new `projects/a.py` (v1), `projects/b.pdf`, `docs/readme.md`; untracked `untracked/u.txt`
/// 2. `a.py` changed (v2), new `projects/sub/c.py`
/// 3. `b.pdf` deleted, `readme.md` changed
/// 4. `a.py` changed (v3)
pub struct Scenario {
    pub env: TestEnv,
    pub incs: Vec<String>,
}

pub fn scenario() -> Scenario {
    let env = TestEnv::new();
    let mut incs = Vec::new();
    env.write_next("projects/a.py", b"print('v1')\n");
    env.write_next("projects/b.pdf", &vec![b'%'; 2048]);
    env.write_next("docs/readme.md", b"# readme v1\n");
    env.write_next("untracked/u.txt", b"untracked\n");
    incs.push(env.backup_all().expect("first increment"));
    env.write_next("projects/a.py", b"print('version two')\n");
    env.write_next("projects/sub/c.py", b"c = 1\n");
    incs.push(env.backup_all().expect("second increment"));
    env.remove("projects/b.pdf");
    env.write_next("docs/readme.md", b"# readme, second edition\n");
    incs.push(env.backup_all().expect("third increment"));
    env.write_next("projects/a.py", b"print('v3')\n");
    incs.push(env.backup_all().expect("fourth increment"));
    Scenario { env, incs }
}

/// Writes `text` to `path`, creating folders.
/// `(location, path, kind)` of each problem in a `check --json` answer.
pub fn check_problems(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["location"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap_or("").to_owned(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn put(path: &Path, text: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// One entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file ([`Tree::files`]): content hash, size, mtime (ns), permission bits.
    File {
        hash: [u8; 32],
        size: u64,
        mtime_ns: i64,
        mode: u32,
    },
    /// A symlink ([`Tree::files`]), never followed: target bytes and mtime (ns).
    Symlink { target: Vec<u8>, mtime_ns: i64 },
    /// A folder ([`Tree::with_dirs`]): its presence only.
    Dir,
    /// Any entry as [`Tree::exact`] records it: the whole `st_mode` (type bits too), size,
    /// mtime (ns), link count, and the content hash (files) or target (symlinks).
    Exact {
        mode: u32,
        size: u64,
        mtime_ns: i64,
        nlink: u64,
        content: Vec<u8>,
    },
}

/// A file time in nanoseconds since the epoch.
pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// The one snapshot of a folder the tests compare: entries by raw relative path bytes.
///
/// * [`Tree::files`] (also [`tree`]): files and symlinks, what a backup must keep;
/// * [`Tree::with_dirs`]: the same plus every folder;
/// * [`Tree::exact`]: every entry with every fact, for "nothing changed" checks (the root
///   itself as `""`, its mode only: the files SQLite and the lock create in `dist` move its
///   size and mtime).
///
/// A missing root is an empty tree. It dereferences to the map.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tree(BTreeMap<Vec<u8>, Node>);

impl std::fmt::Debug for Tree {
    /// Paths as text, for failure messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
            .finish()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Facts {
    Files,
    WithDirs,
    Exact,
}

impl Tree {
    pub fn files(root: &Path) -> Tree {
        Self::scan(root, Facts::Files)
    }

    pub fn with_dirs(root: &Path) -> Tree {
        Self::scan(root, Facts::WithDirs)
    }

    pub fn exact(root: &Path) -> Tree {
        Self::scan(root, Facts::Exact)
    }

    /// [`Tree::files`] of a `dist` without the derived files ([`is_derived`]): every byte a
    /// backup holds, for "nothing changed" checks (compare two calls).
    pub fn dist(dir: &Path) -> Tree {
        Self::files(dir).without_derived()
    }

    /// Without the index and the lock file at the top ([`is_derived`]).
    pub fn without_derived(mut self) -> Tree {
        self.0.retain(|k, _| !is_derived(k));
        self
    }

    fn scan(root: &Path, facts: Facts) -> Tree {
        let mut out = BTreeMap::new();
        if std::fs::symlink_metadata(root).is_err() {
            return Tree(out);
        }
        if facts == Facts::Exact {
            // The root: its mode only (see above).
            let m = std::fs::symlink_metadata(root).expect("lstat root");
            out.insert(
                Vec::new(),
                Node::Exact {
                    mode: m.mode(),
                    size: 0,
                    mtime_ns: 0,
                    nlink: 0,
                    content: Vec::new(),
                },
            );
        }
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let rd =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
            for e in rd {
                let p = e.expect("dir entry").path();
                let m = std::fs::symlink_metadata(&p).expect("lstat");
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                let ft = m.file_type();
                if ft.is_dir() {
                    stack.push(p.clone());
                }
                let node = match facts {
                    Facts::Exact => exact(&p, &m),
                    _ if ft.is_dir() && facts == Facts::WithDirs => Node::Dir,
                    _ if ft.is_symlink() => Node::Symlink {
                        target: std::fs::read_link(&p)
                            .expect("readlink")
                            .as_os_str()
                            .as_bytes()
                            .to_vec(),
                        mtime_ns: mtime_ns(&m),
                    },
                    _ if ft.is_file() => Node::File {
                        hash: *blake3::hash(
                            &std::fs::read(&p)
                                .unwrap_or_else(|e| panic!("read {}: {e}", p.display())),
                        )
                        .as_bytes(),
                        size: m.len(),
                        mtime_ns: mtime_ns(&m),
                        mode: m.mode() & 0o7777,
                    },
                    // Folders (but with_dirs) and special files are left out.
                    _ => continue,
                };
                out.insert(rel, node);
            }
        }
        Tree(out)
    }

    /// Content only (hash of bytes or link target): for file systems that cannot keep modes or
    /// exact mtimes (exFAT).
    pub fn contents(&self) -> BTreeMap<Vec<u8>, [u8; 32]> {
        self.0
            .iter()
            .filter_map(|(k, n)| {
                let h = match n {
                    Node::File { hash, .. } => *hash,
                    Node::Symlink { target, .. } => *blake3::hash(target).as_bytes(),
                    Node::Exact { content, .. } => *blake3::hash(content).as_bytes(),
                    Node::Dir => return None,
                };
                Some((k.clone(), h))
            })
            .collect()
    }

    /// The first 20 differences with `actual` (missing, differing, unexpected entries).
    pub fn differences(&self, actual: &Tree) -> Vec<String> {
        let mut diffs = Vec::new();
        if self == actual {
            return diffs;
        }
        for (k, v) in &self.0 {
            match actual.get(k) {
                None => diffs.push(format!("missing {:?}", String::from_utf8_lossy(k))),
                Some(a) if a != v => diffs.push(format!(
                    "differs {:?}: expected {v:?}, got {a:?}",
                    String::from_utf8_lossy(k)
                )),
                _ => {}
            }
        }
        for k in actual.keys() {
            if !self.contains_key(k) {
                diffs.push(format!("unexpected {:?}", String::from_utf8_lossy(k)));
            }
        }
        diffs.truncate(20);
        diffs
    }
}

fn exact(p: &Path, m: &std::fs::Metadata) -> Node {
    let content = if m.is_file() {
        blake3::hash(&std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
            .as_bytes()
            .to_vec()
    } else if m.file_type().is_symlink() {
        std::fs::read_link(p)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        Vec::new()
    };
    Node::Exact {
        mode: m.mode(),
        size: m.len(),
        mtime_ns: mtime_ns(m),
        nlink: m.nlink(),
        content,
    }
}

impl std::ops::Deref for Tree {
    type Target = BTreeMap<Vec<u8>, Node>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Tree {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl IntoIterator for Tree {
    type Item = (Vec<u8>, Node);
    type IntoIter = std::collections::btree_map::IntoIter<Vec<u8>, Node>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Tree {
    type Item = (&'a Vec<u8>, &'a Node);
    type IntoIter = std::collections::btree_map::Iter<'a, Vec<u8>, Node>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl FromIterator<(Vec<u8>, Node)> for Tree {
    fn from_iter<I: IntoIterator<Item = (Vec<u8>, Node)>>(iter: I) -> Self {
        Tree(iter.into_iter().collect())
    }
}

/// [`Tree::files`]: every file and symlink under `root`.
pub fn tree(root: &Path) -> Tree {
    Tree::files(root)
}

/// Asserts two trees are equal, naming the first differences.
pub fn assert_same_tree(expected: &Tree, actual: &Tree) {
    let diffs = expected.differences(actual);
    if !diffs.is_empty() {
        panic!("trees differ:\n{}", diffs.join("\n"));
    }
}

/// Files at `dist` that are not part of what the backup holds: the index (derived data that
/// every command, reader or writer, creates or brings up to date, with SQLite's WAL and
/// shared-memory files) and the lock file (which only records who last held the lock).
pub fn is_derived(rel: &[u8]) -> bool {
    rel == b".backup.lock" || rel.starts_with(b".backup-index.sqlite")
}

/// Sets a file's times (seconds + ns) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = filetime::FileTime::from_unix_time(secs, nsec as u32);
    filetime::set_symlink_file_times(path, t, t)
        .unwrap_or_else(|e| panic!("set times of {}: {e}", path.display()));
}

/// Output as text, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub mod capability;
pub mod exfat;
pub mod faultfs;
pub mod faults;
pub mod lazyfs;
pub mod mount;
pub mod mount_fixture;
pub mod power;
pub mod serve;

/// The environment that makes a process see the wall clock at `at` (`"2024-01-05 10:00:00"`,
/// read in `tz`) and the time zone `tz`, through libfaketime (Debian package `faketime`): the
/// real binaries see a clock stepped back or forward exactly as after an NTP step or a DST
/// change. File times (`stat`) stay real.
pub fn clock_at(at: &str, tz: &str) -> Vec<(String, String)> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libfaketime (Debian package faketime) is needed for clock tests");
    vec![
        ("LD_PRELOAD".into(), lib.into()),
        // `@`: start the faked clock there and let it run.
        ("FAKETIME".into(), format!("@{at}")),
        ("NO_FAKE_STAT".into(), "1".into()),
        ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("TZ".into(), tz.into()),
    ]
}
