//! Configuration: one JSON file per profile (`docs/config.md`), validated into a [`Config`]
//! that cannot hold an invalid state. Everything wrong is refused before anything is written,
//! with one line that names the file and the offending key, pattern or path.
//!
//! Loading never creates anything: not `dist`, not the config dir.
//!
//! Paths: `~` and `~/…` expand to the home directory (`~user` is not expanded); a relative
//! `src` or `dist` resolves against the directory that holds the config file, not the current
//! directory, so a profile means the same thing wherever `backup` is started from. `src` is
//! canonicalized (it must exist); `dist` may not exist yet, so only its longest existing
//! ancestor is canonicalized. That makes the "`src` inside `dist`" refusal and the scan's
//! "`dist` inside `src`" skip immune to symlinked spellings of the same place.
//!
//! The meaning of the selection keys is documented in [`crate::selection`].

use std::path::{Component, Path, PathBuf};

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;

use crate::explore::prune::{Policy, Within};
use crate::selection::{DirectoryPriority, RuleKey, Selection, SelectionError};
use crate::text::one_line;

/// The copiers of a run without a configured `max_workers` on a local file system, at least:
/// there each new file is fsynced and the copies wait on the disk (a journaling file system
/// stalls writers while it commits) more than on the CPUs. Measured on 2 CPUs, 26k files on
/// ext4: 2 copiers 1.7x the time of one `syncfs` run, 8 copiers 1.15-1.2x (docs/bench.md).
/// On a FUSE drive more copiers than CPUs are slower (exfat-fuse: 2 copiers 16.8 s, 8 22.3 s).
pub const LOCAL_MIN_WORKERS: usize = 8;

/// A validated profile.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (absolute).
    pub file: PathBuf,
    /// Absolute, `~` expanded, canonical, an existing directory. A relative value in the file
    /// is resolved against the config file's directory.
    pub src: PathBuf,
    /// Absolute, `~` expanded; may not exist yet; never equal to `src` nor an ancestor of it
    /// (it may lie inside `src`: the scan skips it). A relative value in the file is resolved
    /// against the config file's directory.
    pub dist: PathBuf,
    /// What to back up, and what to track.
    pub rules: Rules,
    /// ≥ 1; defaults to the number of CPUs (see [`Config::copiers`]).
    pub max_workers: usize,
    /// `max_workers` was set in the profile (else it is the default).
    pub max_workers_set: bool,
    /// Commands run before and after a run (`backup` only).
    pub hooks: Hooks,
    /// The retention policy of `backup-tool prune` without flags and `backup --prune`.
    pub retention: Option<Policy>,
    /// `rules` compiled by [`Config::load`], so that a bad glob is refused there and never met
    /// mid-run (changing `rules` afterwards does not recompile it).
    selection: Selection,
}

/// One hook command: a string is run by the shell (`sh -c`, `cmd /C` on Windows), a list is
/// the program and its arguments, run directly (no quoting to get wrong).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl std::fmt::Display for HookCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookCommand::Shell(s) => write!(f, "{s}"),
            HookCommand::Argv(v) => write!(f, "{v:?}"),
        }
    }
}

/// Default limit on one hook command's run time.
pub const HOOK_TIMEOUT_DEFAULT: u64 = 600;

/// The `"hooks"` of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// Before the run; one failing refuses the run (exit 2) before anything is written.
    pub before: Vec<HookCommand>,
    /// After every run that started (whatever its outcome).
    pub after: Vec<HookCommand>,
    /// After a run that failed, was partial or was refused.
    pub on_error: Vec<HookCommand>,
    /// Seconds one command may take before it is killed (and counts as failed).
    pub timeout_secs: u64,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            before: Vec::new(),
            after: Vec::new(),
            on_error: Vec::new(),
            timeout_secs: HOOK_TIMEOUT_DEFAULT,
        }
    }
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty() && self.on_error.is_empty()
    }
}

/// The selection keys of a profile, as written (compiled by [`RawConfig::parse`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub include_dirs: Vec<String>,
    pub track_dirs: Vec<String>,
    pub exclude_dirs: Vec<String>,
    pub include_files: Vec<String>,
    pub track_files: Vec<String>,
    pub exclude_files: Vec<String>,
    pub directory_priority: DirectoryPriority,
    pub preserved_dirs: Vec<String>,
}

impl Rules {
    /// The rules as (key, patterns) pairs, in the order [`Selection::compile`] expects.
    pub fn pairs(&self) -> [(RuleKey, &[String]); 6] {
        [
            (RuleKey::IncludeDirs, &self.include_dirs),
            (RuleKey::TrackDirs, &self.track_dirs),
            (RuleKey::ExcludeDirs, &self.exclude_dirs),
            (RuleKey::IncludeFiles, &self.include_files),
            (RuleKey::TrackFiles, &self.track_files),
            (RuleKey::ExcludeFiles, &self.exclude_files),
        ]
    }
}

/// Why a configuration was refused. Each variant's message is one clear line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file: tried {0}")]
    NotFound(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {error}")]
    Selection {
        path: String,
        #[source]
        error: SelectionError,
    },
}

/// Why [`RawConfig::parse`] refused a profile's text; one line without the file name (the
/// caller adds it).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Selection(#[from] SelectionError),
}

/// Every key a profile may hold.
pub const KEYS: &[&str] = &[
    "src",
    "dist",
    "dst",
    "include_dirs",
    "track_dirs",
    "exclude_dirs",
    "include_files",
    "track_files",
    "exclude_files",
    "directory_priority",
    "preserved_dirs",
    "max_workers",
    "hooks",
    "retention",
];

/// Keys of `"hooks"`.
pub const HOOK_KEYS: &[&str] = &["before", "after", "on_error", "timeout"];

/// Keys of `"retention"` (the `backup-tool prune` flags without `--`, `-` as `_`).
pub const RETENTION_KEYS: &[&str] = &[
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
];

/// Keys starting with this are comments: accepted anywhere and ignored (JSON has no comments).
pub const COMMENT_PREFIX: &str = "_";

/// A bound far above any useful parallelism; beyond it a typo (`80000`) is more likely than
/// intent, and the pipeline's semaphore must stay well inside its limits.
pub const MAX_WORKERS_LIMIT: usize = 1024;

/// The profile as written, with keys, types and globs checked but no filesystem access:
/// what [`Config::load`] builds first, and what the fuzz target exercises.
#[derive(Clone, Debug, Default)]
pub struct RawConfig {
    pub src: String,
    pub dist: String,
    /// What to back up, and what to track.
    pub rules: Rules,
    pub max_workers: Option<usize>,
    pub hooks: Hooks,
    pub retention: Option<Policy>,
    /// `rules` compiled; [`Config::load`] moves it into the [`Config`] rather than compiling
    /// twice.
    selection: Selection,
}

impl RawConfig {
    /// Parses and checks the JSON text of a profile.
    pub fn parse(text: &str) -> Result<RawConfig, ParseError> {
        let mut raw = Self::parse_inner(text).map_err(|m| ParseError::Invalid(one_line(&m)))?;
        // Last: of several faults, the structural one (a missing key, no rule at all) is named.
        raw.selection = Selection::compile(&raw.rules.pairs(), raw.rules.directory_priority)?;
        Ok(raw)
    }

    /// The compiled selection rules.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    fn parse_inner(text: &str) -> Result<RawConfig, String> {
        let entries = parse_entries(text)?;
        let mut raw = RawConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        let mut src = None;
        let mut dist = None;
        for (key, value) in &entries {
            if key.starts_with(COMMENT_PREFIX) {
                continue;
            }
            let Some(&known) = KEYS.iter().find(|k| **k == key.as_str()) else {
                return Err(format!(
                    "unknown key {key:?} (did you mean {:?}?)",
                    closest_key(key, KEYS)
                ));
            };
            if seen.contains(&known) {
                return Err(format!("key {known:?} appears twice"));
            }
            seen.push(known);
            match known {
                "src" => src = Some(string(known, value)?),
                "dist" | "dst" => {
                    if dist.is_some() {
                        return Err(
                            "both \"dist\" and its alias \"dst\" are set; keep one".to_owned()
                        );
                    }
                    dist = Some(string(known, value)?);
                }
                "include_dirs" => raw.rules.include_dirs = strings(known, value)?,
                "track_dirs" => raw.rules.track_dirs = strings(known, value)?,
                "exclude_dirs" => raw.rules.exclude_dirs = strings(known, value)?,
                "include_files" => raw.rules.include_files = strings(known, value)?,
                "track_files" => raw.rules.track_files = strings(known, value)?,
                "exclude_files" => raw.rules.exclude_files = strings(known, value)?,
                "preserved_dirs" => raw.rules.preserved_dirs = strings(known, value)?,
                "directory_priority" => {
                    raw.rules.directory_priority = match string(known, value)?.as_str() {
                        "track" => DirectoryPriority::Track,
                        "include" => DirectoryPriority::Include,
                        other => {
                            return Err(format!(
                        "\"directory_priority\" must be \"track\" or \"include\", found {other:?}"
                    ))
                        }
                    }
                }
                "max_workers" => raw.max_workers = Some(max_workers(value)?),
                "hooks" => raw.hooks = hooks(value)?,
                "retention" => raw.retention = Some(retention(value)?),
                _ => unreachable!("every key of KEYS is handled"),
            }
        }
        raw.src = src.ok_or("missing required key \"src\"")?;
        raw.dist = dist.ok_or("missing required key \"dist\" (or its alias \"dst\")")?;
        if raw.src.is_empty() {
            return Err("\"src\" is empty".to_owned());
        }
        if raw.dist.is_empty() {
            return Err("\"dist\" is empty".to_owned());
        }
        for name in &raw.rules.preserved_dirs {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(format!(
                    "\"preserved_dirs\" holds directory names, not paths: {name:?}"
                ));
            }
        }
        if raw.rules.include_dirs.is_empty()
            && raw.rules.track_dirs.is_empty()
            && raw.rules.include_files.is_empty()
            && raw.rules.track_files.is_empty()
        {
            return Err(
                "no include or track rule: set at least one of include_dirs, \
                 track_dirs, include_files, track_files"
                    .to_owned(),
            );
        }
        Ok(raw)
    }
}

impl Config {
    /// How many copy workers a run uses: `max_workers` when it is set; by default the number
    /// of CPUs, at least [`LOCAL_MIN_WORKERS`] when `dist` is on a local file system (not
    /// FUSE), where each copy waits on its fsync.
    pub fn copiers(&self, dist_on_fuse: bool) -> usize {
        if self.max_workers_set || dist_on_fuse {
            self.max_workers
        } else {
            self.max_workers.max(LOCAL_MIN_WORKERS)
        }
    }

    /// The lookup order of `docs/config.md`: `explicit`, then `./config.json`, then the
    /// platform config dir (`~/.config/backup/config.json` on Linux).
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = explicit {
            return if p.exists() {
                Ok(p.to_path_buf())
            } else {
                Err(ConfigError::NotFound(format!(
                    "{} (given by --config)",
                    show(p)
                )))
            };
        }
        let local = PathBuf::from("config.json");
        if local.is_file() {
            return Ok(local);
        }
        let mut tried = vec![show(&local)];
        if let Some(dir) = dirs::config_dir() {
            let p = dir.join("backup").join("config.json");
            if p.is_file() {
                return Ok(p);
            }
            tried.push(show(&p));
        }
        Err(ConfigError::NotFound(tried.join(", ")))
    }

    /// Reads and validates one profile.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = absolute(path);
        let invalid = |message: String| ConfigError::Invalid {
            path: show(&file),
            message,
        };
        let text = match std::fs::read(&file) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|e| invalid(format!("not UTF-8 text: {}", e.utf8_error())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound(show(&file)))
            }
            Err(e) => return Err(invalid(format!("cannot read: {e}"))),
        };
        let raw = RawConfig::parse(&text).map_err(|e| match e {
            ParseError::Invalid(message) => invalid(message),
            ParseError::Selection(error) => ConfigError::Selection {
                path: show(&file),
                error,
            },
        })?;
        let base = file.parent().unwrap_or(Path::new("/"));

        let src = resolve(&raw.src, base);
        let src = match std::fs::metadata(&src) {
            Ok(m) if m.is_dir() => src
                .canonicalize()
                .map_err(|e| invalid(format!("src {}: cannot resolve: {e}", show(&src))))?,
            Ok(_) => return Err(invalid(format!("src {} is not a directory", show(&src)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(invalid(format!("src {} does not exist", show(&src))))
            }
            Err(e) => return Err(invalid(format!("src {}: {e}", show(&src)))),
        };
        let dist = canonical_prefix(&resolve(&raw.dist, base));
        if src.starts_with(&dist) {
            let what = if src == dist {
                "is the same directory as"
            } else {
                "lies inside"
            };
            return Err(invalid(format!(
                "src {} {what} dist {}; the backup would contain itself",
                show(&src),
                show(&dist)
            )));
        }
        let max_workers_set = raw.max_workers.is_some();
        let max_workers = raw.max_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        Ok(Config {
            file,
            src,
            dist,
            rules: raw.rules,
            max_workers,
            max_workers_set,
            hooks: raw.hooks,
            retention: raw.retention,
            selection: raw.selection,
        })
    }

    /// The compiled selection rules.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// `dist` relative to `src` when it lies inside it (the scan leaves it out).
    pub fn dist_inside_src(&self) -> Option<&Path> {
        self.dist
            .strip_prefix(&self.src)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
    }
}

/// Top-level object entries in file order, duplicates kept (a `Value` would silently keep only
/// the last of two `"dist"` lines).
fn parse_entries(text: &str) -> Result<Vec<(String, Value)>, String> {
    struct Entries(Vec<(String, Value)>);
    struct EntriesVisitor;
    impl<'de> Visitor<'de> for EntriesVisitor {
        type Value = Entries;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object at the top level")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Value>()? {
                out.push((k, v));
            }
            Ok(Entries(out))
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_map(EntriesVisitor)
        .and_then(|e| de.end().map(|()| e));
    match parsed {
        Ok(Entries(v)) => Ok(v),
        Err(e) => {
            // serde_json's message already ends in "at line L column C"; keep it on one line.
            let msg = e.to_string().replace('\n', " ");
            Err(match e.classify() {
                serde_json::error::Category::Data => format!("invalid config: {msg}"),
                _ => format!("malformed JSON: {msg}"),
            })
        }
    }
}

fn closest_key(key: &str, keys: &[&'static str]) -> &'static str {
    keys.iter()
        .filter(|k| **k != "dst")
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .min()
        .map(|(_, k)| k)
        .unwrap_or("src")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn string(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "{key:?} must be a string, found {}",
            type_name(other)
        )),
    }
}

fn strings(key: &str, v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "{key:?} must be a list of strings, found {}",
            type_name(v)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "{key:?} must be a list of strings, item {} is {}",
                i + 1,
                type_name(other)
            )),
        })
        .collect()
}

fn max_workers(v: &Value) -> Result<usize, String> {
    let n = match v {
        Value::Number(n) => n,
        other => {
            return Err(format!(
                "\"max_workers\" must be an integer ≥ 1, found {}",
                type_name(other)
            ))
        }
    };
    match (n.as_u64(), n.as_i64()) {
        (Some(0), _) | (None, Some(_)) => {
            Err(format!("\"max_workers\" must be at least 1, found {n}"))
        }
        (Some(k), _) if k > MAX_WORKERS_LIMIT as u64 => Err(format!(
            "\"max_workers\" must be at most {MAX_WORKERS_LIMIT}, found {n}"
        )),
        (Some(k), _) => Ok(k as usize),
        (None, None) => Err(format!("\"max_workers\" must be an integer ≥ 1, found {n}")),
    }
}

/// The entries of an object value (`what` names it in messages), comment keys dropped, each
/// key checked against `keys`.
fn object<'a>(
    what: &str,
    v: &'a Value,
    keys: &[&'static str],
) -> Result<Vec<(&'static str, &'a Value)>, String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "{what:?} must be an object, found {}",
            type_name(v)
        ));
    };
    let mut out = Vec::new();
    for (k, v) in m {
        if k.starts_with(COMMENT_PREFIX) {
            continue;
        }
        match keys.iter().find(|x| **x == k.as_str()) {
            Some(&known) => out.push((known, v)),
            None => {
                return Err(format!(
                    "unknown key {k:?} in {what:?} (did you mean {:?}?)",
                    closest_key(k, keys)
                ))
            }
        }
    }
    Ok(out)
}

fn hook_commands(key: &str, v: &Value) -> Result<Vec<HookCommand>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "\"hooks\".{key:?} must be a list of commands, found {}",
            type_name(v)
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if !s.trim().is_empty() => Ok(HookCommand::Shell(s.clone())),
            Value::Array(argv) if !argv.is_empty() => argv
                .iter()
                .map(|a| match a {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "\"hooks\".{key:?} command {}: arguments must be strings, found {}",
                        i + 1,
                        type_name(other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(HookCommand::Argv),
            other => Err(format!(
                "\"hooks\".{key:?} command {} must be a non-empty string (run by sh -c) or a non-empty list [program, args...], found {}",
                i + 1,
                match other {
                    Value::String(_) => "an empty string",
                    Value::Array(_) => "an empty list",
                    o => type_name(o),
                }
            )),
        })
        .collect()
}

fn hooks(v: &Value) -> Result<Hooks, String> {
    let mut h = Hooks::default();
    for (key, value) in object("hooks", v, HOOK_KEYS)? {
        match key {
            "before" => h.before = hook_commands(key, value)?,
            "after" => h.after = hook_commands(key, value)?,
            "on_error" => h.on_error = hook_commands(key, value)?,
            _ => {
                h.timeout_secs = match value.as_u64() {
                    Some(n) if n >= 1 => n,
                    _ => {
                        return Err(format!(
                    "\"hooks\".\"timeout\" must be a whole number of seconds ≥ 1, found {value}"
                ))
                    }
                }
            }
        }
    }
    Ok(h)
}

fn retention(v: &Value) -> Result<Policy, String> {
    let mut p = Policy::default();
    for (key, value) in object("retention", v, RETENTION_KEYS)? {
        if key == "keep_within" {
            let text = string("keep_within", value)?;
            p.keep_within = Some(Within::parse(&text).map_err(|e| format!("\"retention\": {e}"))?);
            continue;
        }
        let n = value.as_u64().ok_or_else(|| {
            format!("\"retention\".{key:?} must be a whole number ≥ 0, found {value}")
        })? as usize;
        match key {
            "keep_last" => p.keep_last = n,
            "keep_hourly" => p.keep_hourly = n,
            "keep_daily" => p.keep_daily = n,
            "keep_weekly" => p.keep_weekly = n,
            "keep_monthly" => p.keep_monthly = n,
            _ => p.keep_yearly = n,
        }
    }
    if p.is_empty() {
        return Err(
            "\"retention\" keeps nothing: set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within".to_owned(),
        );
    }
    Ok(p)
}

/// `~` expansion, then relative paths against `base`, then `.`/`..` folded lexically.
fn resolve(value: &str, base: &Path) -> PathBuf {
    let expanded = match value.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match dirs::home_dir() {
            Some(home) => home.join(rest.trim_start_matches('/')),
            None => PathBuf::from(value),
        },
        _ => PathBuf::from(value),
    };
    normalize(&base.join(expanded))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        normalize(p)
    } else {
        match std::env::current_dir() {
            Ok(cwd) => normalize(&cwd.join(p)),
            Err(_) => p.to_path_buf(),
        }
    }
}

/// Canonicalizes the longest existing ancestor of `p` and appends the rest unchanged.
fn canonical_prefix(p: &Path) -> PathBuf {
    let mut existing = p;
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// A path for a one-line message: quoted, control characters escaped.
pub(crate) fn show(p: &Path) -> String {
    format!("{:?}", p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env {
        dir: tempfile::TempDir,
    }

    impl Env {
        fn new() -> Env {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("src")).unwrap();
            Env { dir }
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn write(&self, text: &str) -> PathBuf {
            let p = self.path("config.json");
            std::fs::write(&p, text).unwrap();
            p
        }
        fn load(&self, text: &str) -> Result<Config, ConfigError> {
            Config::load(&self.write(text))
        }
        /// Loads, expects a refusal, checks it is one line naming the file, returns it.
        fn refuse(&self, text: &str) -> String {
            self.refuse_error(text).to_string()
        }
        fn refuse_error(&self, text: &str) -> ConfigError {
            let err = self.load(text).expect_err("config accepted");
            let msg = err.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg:?}");
            assert!(
                msg.contains(&*self.path("config.json").to_string_lossy()),
                "does not name the file: {msg}"
            );
            assert!(!self.path("dist").exists(), "loading created dist: {msg}");
            err
        }
    }

    const OK: &str = r#"{"src": "src", "dist": "dist", "include_dirs": ["a"]}"#;

    #[test]
    fn copiers_default_to_at_least_eight_on_a_local_disk_and_a_set_value_is_kept() {
        let env = Env::new();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cfg = env.load(OK).unwrap();
        assert_eq!(cfg.max_workers, cpus);
        assert_eq!(cfg.copiers(false), cpus.max(LOCAL_MIN_WORKERS));
        assert_eq!(cfg.copiers(true), cpus);
        let one = env
            .load(r#"{"src": "src", "dist": "dist", "include_dirs": ["a"], "max_workers": 1}"#)
            .unwrap();
        assert_eq!((one.copiers(false), one.copiers(true)), (1, 1));
    }

    #[test]
    fn loads_and_resolves_relative_to_the_config_file() {
        let env = Env::new();
        let cfg = env.load(OK).unwrap();
        assert_eq!(cfg.src, env.path("src").canonicalize().unwrap());
        assert_eq!(
            cfg.dist,
            env.dir.path().canonicalize().unwrap().join("dist")
        );
        assert!(!env.path("dist").exists(), "loading must create nothing");
        assert_eq!(cfg.rules.directory_priority, DirectoryPriority::Track);
        assert!(cfg.max_workers >= 1);
        assert_eq!(cfg.rules.include_dirs, vec!["a".to_owned()]);
        assert_eq!(cfg.file, env.path("config.json"));
    }

    #[test]
    fn dst_alias_priority_workers_and_preserved() {
        let env = Env::new();
        let cfg = env
            .load(
                r#"{"src": "src", "dst": "out/nested", "track_files": ["x"],
                    "directory_priority": "include", "max_workers": 3,
                    "preserved_dirs": [".git"]}"#,
            )
            .unwrap();
        assert!(cfg.dist.ends_with("out/nested"));
        assert_eq!(cfg.rules.directory_priority, DirectoryPriority::Include);
        assert_eq!(cfg.max_workers, 3);
        assert_eq!(cfg.rules.preserved_dirs, vec![".git".to_owned()]);
        assert!(!env.path("out").exists());
    }

    #[test]
    fn tilde_expands_to_home() {
        let env = Env::new();
        let home = dirs::home_dir().unwrap();
        let text = format!(
            r#"{{"src": "{}", "dist": "~/backup-test-never-created/x", "include_files": ["a"]}}"#,
            env.path("src").display()
        );
        let cfg = env.load(&text).unwrap();
        assert!(cfg.dist.starts_with(
            home.canonicalize()
                .unwrap()
                .join("backup-test-never-created")
        ));
        assert!(!home.join("backup-test-never-created").exists());
        assert_eq!(resolve("~", Path::new("/x")), home);
        assert_eq!(
            resolve("~user/a", Path::new("/x")),
            PathBuf::from("/x/~user/a")
        );
    }

    #[test]
    fn dist_inside_src_is_legal() {
        let env = Env::new();
        let cfg = env
            .load(r#"{"src": "src", "dist": "src/backup", "include_dirs": ["**"]}"#)
            .unwrap();
        assert_eq!(cfg.dist_inside_src(), Some(Path::new("backup")));
    }

    #[test]
    fn refuses_malformed_json_with_line_and_column() {
        let env = Env::new();
        let msg = env.refuse("{\n  \"src\": \"src\",\n  \"dist\" \"dist\"\n}");
        assert!(msg.contains("malformed JSON"), "{msg}");
        assert!(msg.contains("line 3 column 10"), "{msg}");
        let msg = env.refuse("{\"src\": \"src\",");
        assert!(
            msg.contains("malformed JSON") && msg.contains("line 1"),
            "{msg}"
        );
        let msg = env.refuse("[1, 2]");
        assert!(msg.contains("JSON object"), "{msg}");
        let msg = env.refuse(&format!("{OK} trailing"));
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn refuses_missing_required_keys() {
        let env = Env::new();
        let msg = env.refuse(r#"{"dist": "dist", "include_dirs": ["a"]}"#);
        assert!(msg.contains("missing required key \"src\""), "{msg}");
        let msg = env.refuse(r#"{"src": "src", "include_dirs": ["a"]}"#);
        assert!(msg.contains("missing required key \"dist\""), "{msg}");
    }

    #[test]
    fn refuses_unknown_key_with_suggestion() {
        let env = Env::new();
        let msg = env.refuse(r#"{"src": "src", "dist": "dist", "include_dir": ["a"], "x": 1}"#);
        assert!(msg.contains("unknown key \"include_dir\""), "{msg}");
        assert!(msg.contains("did you mean \"include_dirs\""), "{msg}");
        let msg =
            env.refuse(r#"{"src": "src", "dist": "dist", "max_worker": 2, "track_files": ["a"]}"#);
        assert!(msg.contains("did you mean \"max_workers\""), "{msg}");
        let msg = env.refuse(r#"{"source": "src", "dist": "dist", "track_files": ["a"]}"#);
        assert!(msg.contains("unknown key \"source\""), "{msg}");
    }

    #[test]
    fn refuses_dist_and_dst_together_and_duplicates() {
        let env = Env::new();
        let msg =
            env.refuse(r#"{"src": "src", "dist": "dist", "dst": "dist", "include_dirs": ["a"]}"#);
        assert!(msg.contains("\"dist\"") && msg.contains("\"dst\""), "{msg}");
        let msg =
            env.refuse(r#"{"src": "src", "dist": "dist", "dist": "other", "include_dirs": ["a"]}"#);
        assert!(msg.contains("\"dist\" appears twice"), "{msg}");
    }

    #[test]
    fn refuses_wrong_types_naming_the_key() {
        let env = Env::new();
        for (text, key) in [
            (
                r#"{"src": 1, "dist": "dist", "include_dirs": ["a"]}"#,
                "\"src\"",
            ),
            (
                r#"{"src": "src", "dist": ["d"], "include_dirs": ["a"]}"#,
                "\"dist\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "include_dirs": "a"}"#,
                "\"include_dirs\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a", 2]}"#,
                "\"track_files\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a"], "exclude_dirs": {}}"#,
                "\"exclude_dirs\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a"], "max_workers": "4"}"#,
                "\"max_workers\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a"], "max_workers": 2.5}"#,
                "\"max_workers\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a"], "directory_priority": "both"}"#,
                "\"directory_priority\"",
            ),
            (
                r#"{"src": "src", "dist": "d", "track_files": ["a"], "preserved_dirs": [".git/x"]}"#,
                "\"preserved_dirs\"",
            ),
        ] {
            let msg = env.refuse(text);
            assert!(msg.contains(key), "{text} -> {msg}");
        }
    }

    #[test]
    fn refuses_invalid_globs_naming_pattern_and_key() {
        use crate::selection::PatternErrorKind as K;
        use globset::ErrorKind as G;
        let env = Env::new();
        for (key, pat, kind) in [
            (RuleKey::IncludeDirs, "a/[bc", K::Glob(G::UnclosedClass)),
            (RuleKey::TrackDirs, "{a,b", K::Glob(G::UnclosedAlternates)),
            (RuleKey::ExcludeDirs, "x/a\\", K::Glob(G::DanglingEscape)),
            (RuleKey::IncludeFiles, "[z", K::Glob(G::UnclosedClass)),
            (RuleKey::TrackFiles, "/etc/passwd", K::Absolute),
            (RuleKey::ExcludeFiles, "", K::Empty),
            (RuleKey::IncludeFiles, "dir/", K::NamesDirectory),
            (RuleKey::TrackFiles, "./", K::Empty),
            (RuleKey::IncludeFiles, ".:rec", K::NamesNoFile),
            (RuleKey::ExcludeFiles, "b}", K::Glob(G::UnopenedAlternates)),
            // globset's message holds the range's raw newline; the refusal must stay one line.
            (
                RuleKey::TrackDirs,
                "?[?*-\n",
                K::Glob(G::InvalidRange('*', '\n')),
            ),
        ] {
            let name = key.name();
            let text = if key == RuleKey::IncludeDirs {
                format!(r#"{{"src": "src", "dist": "d", "{name}": ["fine", {pat:?}]}}"#)
            } else {
                format!(
                    r#"{{"src": "src", "dist": "d", "include_dirs": ["ok"], "{name}": ["fine", {pat:?}]}}"#
                )
            };
            let err = env.refuse_error(&text);
            assert!(
                matches!(
                    &err,
                    ConfigError::Selection { error, .. }
                        if *error == SelectionError { key, pattern: pat.to_owned(), kind: kind.clone() }
                ),
                "{text} -> {err:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_src() {
        let env = Env::new();
        let msg = env.refuse(r#"{"src": "nope", "dist": "dist", "include_dirs": ["a"]}"#);
        assert!(
            msg.contains("src") && msg.contains("does not exist"),
            "{msg}"
        );
        assert!(msg.contains("nope"), "{msg}");
        std::fs::write(env.path("file"), b"x").unwrap();
        let msg = env.refuse(r#"{"src": "file", "dist": "dist", "include_dirs": ["a"]}"#);
        assert!(msg.contains("is not a directory"), "{msg}");
        let msg = env.refuse(r#"{"src": "", "dist": "dist", "include_dirs": ["a"]}"#);
        assert!(msg.contains("\"src\" is empty"), "{msg}");
    }

    #[test]
    fn refuses_src_inside_or_equal_to_dist() {
        let env = Env::new();
        let msg = env.refuse(r#"{"src": "src", "dist": ".", "include_dirs": ["a"]}"#);
        assert!(msg.contains("lies inside dist"), "{msg}");
        let msg = env.refuse(r#"{"src": "src", "dist": "src", "include_dirs": ["a"]}"#);
        assert!(msg.contains("same directory"), "{msg}");
        // Through a symlinked spelling of the same place.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(env.dir.path(), env.path("alias")).unwrap();
            let msg = env.refuse(r#"{"src": "src", "dist": "alias", "include_dirs": ["a"]}"#);
            assert!(msg.contains("lies inside dist"), "{msg}");
        }
    }

    #[test]
    fn refuses_no_rule() {
        let env = Env::new();
        let msg = env
            .refuse(r#"{"src": "src", "dist": "dist", "exclude_dirs": ["a"], "include_dirs": []}"#);
        assert!(msg.contains("no include or track rule"), "{msg}");
    }

    #[test]
    fn refuses_bad_max_workers() {
        let env = Env::new();
        for n in ["0", "-3", "100000"] {
            let msg = env.refuse(&format!(
                r#"{{"src": "src", "dist": "dist", "include_dirs": ["a"], "max_workers": {n}}}"#
            ));
            assert!(msg.contains("\"max_workers\"") && msg.contains(n), "{msg}");
        }
    }

    #[test]
    fn refuses_missing_config_file() {
        let env = Env::new();
        let missing = env.path("nope.json");
        let err = Config::locate(Some(&missing)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no config file") && msg.contains("nope.json"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound(_)), "{err}");
        assert!(err.to_string().contains("nope.json"));
    }

    #[test]
    fn locate_prefers_explicit() {
        let env = Env::new();
        let p = env.write(OK);
        assert_eq!(Config::locate(Some(&p)).unwrap(), p);
    }

    #[test]
    fn raw_parse_accepts_the_seed_example() {
        let raw = RawConfig::parse(
            r#"{
  "src": "~/Documents",
  "dist": "~/Backups",
  "include_dirs": ["projects", "notes"],
  "track_dirs": ["projects"],
  "include_files": ["*.txt", "*.md"],
  "track_files": ["important.docx"],
  "exclude_dirs": ["tmp", "cache"],
  "exclude_files": ["*.log"],
  "max_workers": 8
}"#,
        )
        .unwrap();
        assert_eq!(raw.max_workers, Some(8));
        assert_eq!(raw.rules.track_dirs, vec!["projects".to_owned()]);
    }
}
