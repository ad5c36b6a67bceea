//! Selection: which entries of `src` a profile backs up, and which of them are tracked.
//!
//! Every pattern is a glob over paths relative to `src`, always with `/` as separator, compiled
//! by `globset` with `literal_separator(true)`: `*`, `?` and `[..]` stay within one path
//! component, `**` spans any number of components (`**/x` also matches `x` itself), and `{a,b}`
//! alternates. Matching is case-sensitive and byte-exact, so non-UTF-8 names work.
//!
//! Normalization of a pattern as written: a trailing `:rec` is removed and remembered, leading
//! `./` is dropped, a trailing `/` or `/**` is dropped from directory patterns (`projects/**`
//! selects `projects` recursively, files directly in it included). Empty patterns, patterns
//! starting with `/` and file patterns ending in `/` are refused. `:rec` means "at any depth"
//! for every key: the pattern is matched as `**/<pattern>`.
//!
//! The rules:
//! - `include_dirs`, `track_dirs`: the directory's path relative to `src` (`projects`,
//!   `work/*/docs`, `**/notes`). A matching directory is selected recursively. The pattern `.`
//!   (or `**`) names `src` itself. A file under an include dir only is untracked, under a track
//!   dir only tracked, under both: `directory_priority` decides (`track` by default).
//! - `exclude_dirs`: a pattern without `/` matches a directory *name* at any depth; one with `/`
//!   the path relative to `src` (a trailing `/` does not count: `cache/` is a name). An excluded directory and everything below it leave the
//!   directory rules, even when an include/track dir pattern names it or lies below it (the
//!   exclusion is the more specific wish).
//! - `include_files`, `track_files`: a pattern without `/` matches a file name in the `src` root
//!   only, one with `/` the relative path; with `:rec` either matches at any depth
//!   (`*.md:rec`, `notes/*.txt:rec` = `**/notes/*.txt`).
//! - `exclude_files`: like `exclude_dirs`, a name at any depth or a relative path; drops files
//!   the directory rules selected.
//! - Explicit file rules beat everything else: a file named by `include_files` is selected
//!   untracked, one named by `track_files` tracked, whatever the directory rules say — also in
//!   an excluded directory or when `exclude_files` names it. Named by both: untracked
//!   ("include beats track"). So a `:rec` or `**` file rule makes the walk look inside excluded
//!   directories too (only there is the rule's file to be found).
//! - Only what a rule names is selected. Symlinks are matched like files (they are entries of
//!   their own and never followed). Directories themselves are not entries; `preserved_dirs`
//!   lists names of selected directories kept in the mirror even when empty.
//!
//! Unmatched-rule warnings cover the selecting keys (include/track, dirs and files): a typo
//! there silently loses data. Exclusions are not warned about: people list `node_modules` or
//! `.cache` as a guard against what may appear later. A dir pattern counts as matched when a
//! directory matches it, even one an exclusion then prunes.
//!
//! Pruning: the scan descends into a directory only when something below it can be selected —
//! it is inside a selected dir, or some include/track pattern could match a path below it
//! ([`Selection::descend`]). That is decided component by component; patterns with `{`, `[`
//! or `\` are not split and always allow descending (correct, only slower).

use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::text::one_line;

/// Which rule wins for a file under both an include dir and a track dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirectoryPriority {
    #[default]
    Track,
    Include,
}

/// The six rule keys, in the order [`Selection::compile`] takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKey {
    IncludeDirs,
    TrackDirs,
    ExcludeDirs,
    IncludeFiles,
    TrackFiles,
    ExcludeFiles,
}

impl RuleKey {
    pub const ALL: [RuleKey; 6] = [
        RuleKey::IncludeDirs,
        RuleKey::TrackDirs,
        RuleKey::ExcludeDirs,
        RuleKey::IncludeFiles,
        RuleKey::TrackFiles,
        RuleKey::ExcludeFiles,
    ];

    /// The key as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            RuleKey::IncludeDirs => "include_dirs",
            RuleKey::TrackDirs => "track_dirs",
            RuleKey::ExcludeDirs => "exclude_dirs",
            RuleKey::IncludeFiles => "include_files",
            RuleKey::TrackFiles => "track_files",
            RuleKey::ExcludeFiles => "exclude_files",
        }
    }

    fn is_dir_rule(self) -> bool {
        matches!(
            self,
            RuleKey::IncludeDirs | RuleKey::TrackDirs | RuleKey::ExcludeDirs
        )
    }

    /// Keys whose patterns must match something, or the user hears about it.
    fn selects(self) -> bool {
        !matches!(self, RuleKey::ExcludeDirs | RuleKey::ExcludeFiles)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A pattern that cannot be compiled: the first bad one, with its key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", one_line(&self.describe()))]
pub struct SelectionError {
    pub key: RuleKey,
    /// As written in the profile; empty for [`PatternErrorKind::Set`], which no single pattern
    /// causes.
    pub pattern: String,
    pub kind: PatternErrorKind,
}

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternErrorKind {
    /// Nothing left once `./`, `:rec` and trailing `/` are removed.
    Empty,
    /// Starts with `/`: patterns are relative to `src`.
    Absolute,
    /// A file pattern ending in `/`.
    NamesDirectory,
    /// `.` as a file pattern.
    NamesNoFile,
    /// `globset` refuses the glob.
    Glob(globset::ErrorKind),
    /// `globset` cannot build the key's patterns into one set (a size limit, not one pattern).
    Set(globset::Error),
}

impl SelectionError {
    fn new(key: RuleKey, pattern: &str, kind: PatternErrorKind) -> SelectionError {
        SelectionError {
            key,
            pattern: pattern.to_owned(),
            kind,
        }
    }

    /// The message before control characters are escaped (a pattern or a globset message may
    /// hold a newline, and a refusal is one line).
    fn describe(&self) -> String {
        let (key, pattern) = (self.key.name(), &self.pattern);
        match &self.kind {
            PatternErrorKind::Empty => format!("empty pattern in {key:?}"),
            PatternErrorKind::Absolute => {
                format!("pattern {pattern:?} in {key:?} must be relative to src (no leading '/')")
            }
            PatternErrorKind::NamesDirectory => format!(
                "pattern {pattern:?} in {key:?} names a directory; file patterns match files"
            ),
            PatternErrorKind::NamesNoFile => format!("pattern \".\" in {key:?} names no file"),
            PatternErrorKind::Glob(kind) => format!("invalid glob {pattern:?} in {key:?}: {kind}"),
            PatternErrorKind::Set(error) => format!("invalid glob in {key:?}: {error}"),
        }
    }
}

/// One path component of a pattern, for deciding whether a directory can hold a match.
#[derive(Clone, Debug)]
enum Part {
    /// `**`: zero or more components.
    Deep,
    One(GlobMatcher),
}

#[derive(Clone, Debug)]
struct Rule {
    /// As written in the config, for messages.
    written: String,
    /// `None`: the pattern cannot be split into components; assume a match anywhere.
    parts: Option<Vec<Part>>,
    /// Names `src` itself (`.` or `**` in a directory rule).
    names_root: bool,
}

#[derive(Clone, Debug, Default)]
struct RuleSet {
    set: GlobSet,
    rules: Vec<Rule>,
}

impl RuleSet {
    fn compile(key: RuleKey, patterns: &[String]) -> Result<RuleSet, SelectionError> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(patterns.len());
        for written in patterns {
            let effective = effective_pattern(key, written)
                .map_err(|kind| SelectionError::new(key, written, kind))?;
            let glob = glob(&effective)
                .map_err(|kind| SelectionError::new(key, written, PatternErrorKind::Glob(kind)))?;
            builder.add(glob);
            rules.push(Rule {
                written: written.clone(),
                parts: split_parts(&effective),
                names_root: key.is_dir_rule() && (effective == "." || effective == "**"),
            });
        }
        let set = builder
            .build()
            .map_err(|e| SelectionError::new(key, "", PatternErrorKind::Set(e)))?;
        Ok(RuleSet { set, rules })
    }

    fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Matches and records which patterns hit.
    fn hit(&self, cand: &Candidate, hits: &mut [bool], scratch: &mut Vec<usize>) -> bool {
        if self.rules.is_empty() || !self.set.is_match_candidate(cand) {
            return false;
        }
        self.set.matches_candidate_into(cand, scratch);
        for &i in scratch.iter() {
            hits[i] = true;
        }
        true
    }

    /// Could some pattern match a path strictly below the directory `dir` (components)?
    fn viable_below(&self, dir: &[&[u8]]) -> bool {
        self.rules.iter().any(|r| match &r.parts {
            None => true,
            Some(parts) => prefix_viable(parts, dir),
        })
    }
}

fn glob(pattern: &str) -> Result<globset::Glob, globset::ErrorKind> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().clone())
}

/// The glob actually matched against relative paths (see the module doc).
fn effective_pattern(key: RuleKey, written: &str) -> Result<String, PatternErrorKind> {
    let (mut p, rec) = match written.strip_suffix(":rec") {
        Some(p) => (p, true),
        None => (written, false),
    };
    if p.starts_with('/') {
        return Err(PatternErrorKind::Absolute);
    }
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    // A '/' inside the pattern as written anchors it at `src` (decided before `dir/**` is
    // shortened to `dir`, so that stays a path).
    let mut anchored = p.contains('/');
    if key.is_dir_rule() {
        p = p.trim_end_matches('/');
        anchored = p.contains('/');
        // `projects/**` means "everything under projects" (as in rsync), which is what
        // selecting `projects` recursively does; as a plain glob it would miss the files
        // directly in `projects`.
        while let Some(base) = p.strip_suffix("/**") {
            p = base;
        }
        if p.is_empty() && written.starts_with('.') {
            // "./" names `src` itself, like ".".
            p = ".";
        }
    } else if p.ends_with('/') {
        return Err(PatternErrorKind::NamesDirectory);
    }
    if p.is_empty() {
        return Err(PatternErrorKind::Empty);
    }
    if p == "." && !key.is_dir_rule() {
        return Err(PatternErrorKind::NamesNoFile);
    }
    let any_depth =
        rec || (matches!(key, RuleKey::ExcludeDirs | RuleKey::ExcludeFiles) && !anchored);
    Ok(
        if any_depth && p != "." && !p.starts_with("**/") && p != "**" {
            format!("**/{p}")
        } else {
            p.to_owned()
        },
    )
}

fn split_parts(effective: &str) -> Option<Vec<Part>> {
    if effective.contains(['{', '[', '\\']) {
        return None;
    }
    effective
        .split('/')
        .map(|c| {
            if c == "**" {
                Some(Part::Deep)
            } else {
                glob(c).ok().map(|g| Part::One(g.compile_matcher()))
            }
        })
        .collect()
}

/// After consuming `dir`'s components, is some pattern position left that a further
/// component could advance? (An NFA over the pattern's components.)
fn prefix_viable(parts: &[Part], dir: &[&[u8]]) -> bool {
    let n = parts.len();
    let mut cur = vec![false; n + 1];
    let close = |set: &mut Vec<bool>| {
        for i in 0..n {
            if set[i] && matches!(parts[i], Part::Deep) {
                set[i + 1] = true;
            }
        }
    };
    cur[0] = true;
    close(&mut cur);
    for comp in dir {
        let mut next = vec![false; n + 1];
        let path = bytes_path(comp);
        for i in 0..n {
            if !cur[i] {
                continue;
            }
            match &parts[i] {
                Part::Deep => next[i] = true,
                Part::One(m) => {
                    if m.is_match(path) {
                        next[i + 1] = true
                    }
                }
            }
        }
        close(&mut next);
        if !next.iter().any(|&b| b) {
            return false;
        }
        cur = next;
    }
    cur[..n].iter().any(|&b| b)
}

/// Encoded path bytes as a `Path` (no copy).
#[cfg(unix)]
pub(crate) fn bytes_path(b: &[u8]) -> &Path {
    use std::os::unix::ffi::OsStrExt;
    Path::new(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
pub(crate) fn bytes_path(b: &[u8]) -> &Path {
    // Encoded bytes of our own paths are valid WTF-8 on Windows.
    Path::new(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(b) })
}

/// The compiled rules of a profile.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    sets: [RuleSet; 6],
    priority: DirectoryPriority,
}

/// One rule that matched a path, for explanations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    pub key: RuleKey,
    /// The pattern as written in the profile.
    pub pattern: String,
    /// For a directory rule, the directory it matched (relative to `src`, `.` for `src`).
    pub dir: Option<String>,
}

impl RuleMatch {
    fn new(key: RuleKey, pattern: &str, dir: Option<String>) -> RuleMatch {
        RuleMatch {
            key,
            pattern: pattern.to_owned(),
            dir,
        }
    }
}

impl std::fmt::Display for RuleMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.key.name(), self.pattern)?;
        if let Some(d) = &self.dir {
            write!(f, " at {}/", d.trim_end_matches('/'))?;
        }
        Ok(())
    }
}

/// The answer of [`Selection::explain_path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Why {
    /// `None`: not backed up; `Some(tracked)`.
    pub selected: Option<bool>,
    /// The rule that selected it.
    pub decided_by: Option<RuleMatch>,
    /// The exclusion that matched it: what left it out, or what a file rule beat.
    pub excluded_by: Option<RuleMatch>,
    /// Other rules that matched but did not decide (a losing file rule, the other kind of
    /// directory under `directory_priority`, directory rules an exclusion cancelled).
    pub overruled: Vec<RuleMatch>,
}

/// What the directory rules say about one directory; children inherit it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirState {
    /// Inside a directory matched by `include_dirs`.
    pub include: bool,
    /// Inside a directory matched by `track_dirs`.
    pub track: bool,
    /// This directory or an ancestor matched `exclude_dirs`: only explicit file rules apply.
    pub excluded: bool,
}

impl DirState {
    /// Everything below is selected by the directory rules (modulo exclusions).
    pub fn selected(self) -> bool {
        !self.excluded && (self.include || self.track)
    }
}

/// Which patterns matched something during a scan.
#[derive(Clone, Debug)]
pub struct Hits {
    hit: [Vec<bool>; 6],
    scratch: Vec<usize>,
}

impl Hits {
    /// Adds what another walker thread matched.
    pub fn merge(&mut self, other: &Hits) {
        for (mine, theirs) in self.hit.iter_mut().zip(&other.hit) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m |= *t;
            }
        }
    }
}

impl Selection {
    /// Compiles `(key, patterns)` pairs; the error names the first bad pattern and its key.
    pub fn compile(
        rules: &[(RuleKey, &[String]); 6],
        priority: DirectoryPriority,
    ) -> Result<Selection, SelectionError> {
        let mut sets: [RuleSet; 6] = Default::default();
        for (key, patterns) in rules {
            sets[key.index()] = RuleSet::compile(*key, patterns)?;
        }
        Ok(Selection { sets, priority })
    }

    fn set(&self, key: RuleKey) -> &RuleSet {
        &self.sets[key.index()]
    }

    pub fn new_hits(&self) -> Hits {
        Hits {
            hit: std::array::from_fn(|i| vec![false; self.sets[i].rules.len()]),
            scratch: Vec::new(),
        }
    }

    /// The state of `src` itself.
    pub fn root_state(&self, hits: &mut Hits) -> DirState {
        let mut st = DirState::default();
        for key in [RuleKey::IncludeDirs, RuleKey::TrackDirs] {
            for (i, r) in self.set(key).rules.iter().enumerate() {
                if r.names_root {
                    hits.hit[key.index()][i] = true;
                    match key {
                        RuleKey::IncludeDirs => st.include = true,
                        _ => st.track = true,
                    }
                }
            }
        }
        st
    }

    /// The state of directory `rel` (relative to `src`) whose parent has state `parent`.
    pub fn enter_dir(&self, parent: DirState, rel: &Path, hits: &mut Hits) -> DirState {
        if parent.excluded {
            return parent;
        }
        let cand = Candidate::new(rel);
        let mut st = parent;
        let Hits { hit, scratch } = hits;
        st.include |= self.set(RuleKey::IncludeDirs).hit(
            &cand,
            &mut hit[RuleKey::IncludeDirs.index()],
            scratch,
        );
        st.track |=
            self.set(RuleKey::TrackDirs)
                .hit(&cand, &mut hit[RuleKey::TrackDirs.index()], scratch);
        if self.set(RuleKey::ExcludeDirs).hit(
            &cand,
            &mut hit[RuleKey::ExcludeDirs.index()],
            scratch,
        ) {
            return DirState {
                include: false,
                track: false,
                excluded: true,
            };
        }
        st
    }

    /// Whether the scan must look inside directory `rel` (components relative to `src`; empty
    /// for `src` itself) whose state is `state`.
    pub fn descend(&self, state: DirState, rel: &[&[u8]]) -> bool {
        if state.selected() {
            return true;
        }
        let files = self.set(RuleKey::IncludeFiles).viable_below(rel)
            || self.set(RuleKey::TrackFiles).viable_below(rel);
        if state.excluded {
            return files;
        }
        files
            || self.set(RuleKey::IncludeDirs).viable_below(rel)
            || self.set(RuleKey::TrackDirs).viable_below(rel)
    }

    /// Whether a file (or symlink) `rel` in a directory of state `parent` is selected, and if
    /// so whether it is tracked.
    pub fn classify_file(&self, parent: DirState, rel: &Path, hits: &mut Hits) -> Option<bool> {
        let cand = Candidate::new(rel);
        let Hits { hit, scratch } = hits;
        let include = self.set(RuleKey::IncludeFiles).hit(
            &cand,
            &mut hit[RuleKey::IncludeFiles.index()],
            scratch,
        );
        let track = self.set(RuleKey::TrackFiles).hit(
            &cand,
            &mut hit[RuleKey::TrackFiles.index()],
            scratch,
        );
        if include {
            return Some(false);
        }
        if track {
            return Some(true);
        }
        if !parent.selected()
            || self.set(RuleKey::ExcludeFiles).hit(
                &cand,
                &mut hit[RuleKey::ExcludeFiles.index()],
                scratch,
            )
        {
            return None;
        }
        Some(match (parent.include, parent.track) {
            (true, true) => self.priority == DirectoryPriority::Track,
            (_, track) => track,
        })
    }

    /// Classifies one file path by walking its ancestors, as the scan would. `None` also when
    /// some ancestor would not be descended into (which, by construction, the selection of
    /// the file itself must agree with).
    pub fn classify_path(&self, components: &[&[u8]], hits: &mut Hits) -> Option<bool> {
        let (_, dirs) = components.split_last()?;
        let mut state = self.root_state(hits);
        let mut path = std::path::PathBuf::new();
        for (depth, comp) in dirs.iter().enumerate() {
            if !self.descend(state, &dirs[..depth]) {
                return None;
            }
            path.push(bytes_path(comp));
            state = self.enter_dir(state, &path, hits);
        }
        if !self.descend(state, dirs) {
            return None;
        }
        path.push(bytes_path(components[components.len() - 1]));
        self.classify_file(state, &path, hits)
    }

    /// Why a file (or symlink) is selected or not: the verdict of [`Selection::classify_path`]
    /// with the rules that decided it, for `backup --explain`.
    pub fn explain_path(&self, components: &[&[u8]]) -> Why {
        let mut hits = self.new_hits();
        let selected = self.classify_path(components, &mut hits);
        let mut why = Why {
            selected,
            decided_by: None,
            excluded_by: None,
            overruled: Vec::new(),
        };
        let Some((name, dirs)) = components.split_last() else {
            return why;
        };
        // The directory rules along the way: the outermost include and track matches (the ones
        // that selected the subtree) and the exclusion that stopped them.
        let mut include: Option<RuleMatch> = None;
        let mut track: Option<RuleMatch> = None;
        for (key, slot) in [
            (RuleKey::IncludeDirs, &mut include),
            (RuleKey::TrackDirs, &mut track),
        ] {
            if let Some(r) = self.set(key).rules.iter().find(|r| r.names_root) {
                *slot = Some(RuleMatch::new(key, &r.written, Some(".".to_owned())));
            }
        }
        let mut path = std::path::PathBuf::new();
        for comp in dirs {
            path.push(bytes_path(comp));
            let shown = path.to_string_lossy().into_owned();
            let cand = Candidate::new(&path);
            if let Some(m) = self.first_match(RuleKey::ExcludeDirs, &cand) {
                why.excluded_by = Some(RuleMatch::new(RuleKey::ExcludeDirs, m, Some(shown)));
                break;
            }
            for (key, slot) in [
                (RuleKey::IncludeDirs, &mut include),
                (RuleKey::TrackDirs, &mut track),
            ] {
                if slot.is_none() {
                    if let Some(m) = self.first_match(key, &cand) {
                        *slot = Some(RuleMatch::new(key, m, Some(shown.clone())));
                    }
                }
            }
        }
        path.push(bytes_path(name));
        let cand = Candidate::new(&path);
        let file_rule = |key| {
            self.first_match(key, &cand)
                .map(|m| RuleMatch::new(key, m, None))
        };
        let include_file = file_rule(RuleKey::IncludeFiles);
        let track_file = file_rule(RuleKey::TrackFiles);
        let exclude_file = file_rule(RuleKey::ExcludeFiles);
        let dir_rules: Vec<RuleMatch> = if why.excluded_by.is_some() {
            Vec::new()
        } else {
            let (first, second) = match self.priority {
                DirectoryPriority::Track => (track, include),
                DirectoryPriority::Include => (include, track),
            };
            first.into_iter().chain(second).collect()
        };
        if selected.is_none() {
            // Not selected: an exclusion, or no rule at all.
            if why.excluded_by.is_none() && !dir_rules.is_empty() {
                why.excluded_by = exclude_file;
                why.overruled = dir_rules;
            }
            return why;
        }
        let mut winners = include_file.into_iter().chain(track_file).chain(dir_rules);
        why.decided_by = winners.next();
        why.overruled = winners.collect();
        if why.excluded_by.is_none() {
            why.excluded_by = exclude_file;
        }
        if why.excluded_by.is_some() {
            // A file rule beat the exclusion: the directory rules never applied.
            why.overruled.retain(|r| !r.key.is_dir_rule());
        }
        why
    }

    fn first_match(&self, key: RuleKey, cand: &Candidate) -> Option<&str> {
        let set = self.set(key);
        if set.rules.is_empty() {
            return None;
        }
        set.set
            .matches_candidate(cand)
            .first()
            .map(|&i| set.rules[i].written.as_str())
    }

    /// The selecting patterns that matched nothing, as (key, pattern as written).
    pub fn unmatched(&self, hits: &Hits) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for key in RuleKey::ALL {
            if !key.selects() {
                continue;
            }
            for (i, r) in self.set(key).rules.iter().enumerate() {
                if !hits.hit[key.index()][i] {
                    out.push((key.name(), r.written.clone()));
                }
            }
        }
        out
    }

    /// No rule selects anything (refused by config loading; kept for hand-built selections).
    pub fn is_empty(&self) -> bool {
        [
            RuleKey::IncludeDirs,
            RuleKey::TrackDirs,
            RuleKey::IncludeFiles,
            RuleKey::TrackFiles,
        ]
        .iter()
        .all(|k| self.set(*k).is_empty())
    }
}

#[cfg(test)]
mod why_tests {
    use super::*;

    fn sel(rules: &[(RuleKey, &[&str])], priority: DirectoryPriority) -> Selection {
        let owned: Vec<(RuleKey, Vec<String>)> = RuleKey::ALL
            .iter()
            .map(|k| {
                let pats = rules
                    .iter()
                    .find(|(rk, _)| rk == k)
                    .map(|(_, p)| p.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default();
                (*k, pats)
            })
            .collect();
        let pairs: [(RuleKey, &[String]); 6] =
            std::array::from_fn(|i| (owned[i].0, owned[i].1.as_slice()));
        Selection::compile(&pairs, priority).unwrap()
    }

    fn why(s: &Selection, p: &str) -> Why {
        let comps: Vec<&[u8]> = p.split('/').map(str::as_bytes).collect();
        s.explain_path(&comps)
    }

    #[test]
    fn names_the_deciding_and_excluding_rules() {
        let s = sel(
            &[
                (RuleKey::IncludeDirs, &["."]),
                (RuleKey::TrackDirs, &["projects"]),
                (RuleKey::ExcludeDirs, &["tmp"]),
                (RuleKey::IncludeFiles, &["keep.log:rec"]),
                (RuleKey::ExcludeFiles, &["*.log"]),
            ],
            DirectoryPriority::Track,
        );
        let w = why(&s, "projects/a.txt");
        assert_eq!(w.selected, Some(true));
        let d = w.decided_by.unwrap();
        assert_eq!(
            (d.key, d.dir.as_deref()),
            (RuleKey::TrackDirs, Some("projects"))
        );
        assert_eq!(w.overruled[0].key, RuleKey::IncludeDirs);

        let w = why(&s, "a/tmp/x.txt");
        assert_eq!(w.selected, None);
        assert_eq!(w.excluded_by.unwrap().dir.as_deref(), Some("a/tmp"));

        let w = why(&s, "notes/x.log");
        assert_eq!(w.selected, None);
        assert_eq!(w.excluded_by.unwrap().key, RuleKey::ExcludeFiles);
        assert_eq!(w.overruled[0].key, RuleKey::IncludeDirs);

        let w = why(&s, "tmp/keep.log");
        assert_eq!(w.selected, Some(false));
        assert_eq!(w.decided_by.unwrap().key, RuleKey::IncludeFiles);
        assert_eq!(w.excluded_by.unwrap().key, RuleKey::ExcludeDirs);
    }

    #[test]
    fn nothing_names_it() {
        let s = sel(
            &[(RuleKey::TrackFiles, &["a.txt"])],
            DirectoryPriority::Track,
        );
        let w = why(&s, "b/c.txt");
        assert_eq!(
            w,
            Why {
                selected: None,
                decided_by: None,
                excluded_by: None,
                overruled: vec![]
            }
        );
        assert_eq!(
            why(&s, "a.txt").decided_by.unwrap().key,
            RuleKey::TrackFiles
        );
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    fn refusal(key: RuleKey, pattern: &str) -> String {
        let mut rules: [(RuleKey, &[String]); 6] = RuleKey::ALL.map(|k| (k, &[][..]));
        let pats = [pattern.to_owned()];
        rules[key.index()].1 = &pats;
        Selection::compile(&rules, DirectoryPriority::Track)
            .unwrap_err()
            .to_string()
    }

    /// The refusal is what users read (and `docs/config.md` quotes): one line that names the
    /// key and the pattern.
    #[test]
    fn messages_name_key_and_pattern_on_one_line() {
        for (key, pattern, want) in [
            (
                RuleKey::IncludeDirs,
                "docs/[a-",
                r#"invalid glob "docs/[a-" in "include_dirs": unclosed character class; missing ']'"#,
            ),
            (
                RuleKey::TrackFiles,
                "/etc/passwd",
                r#"pattern "/etc/passwd" in "track_files" must be relative to src (no leading '/')"#,
            ),
            (
                RuleKey::IncludeFiles,
                "dir/",
                r#"pattern "dir/" in "include_files" names a directory; file patterns match files"#,
            ),
            (
                RuleKey::ExcludeFiles,
                "",
                r#"empty pattern in "exclude_files""#,
            ),
            (
                RuleKey::TrackFiles,
                ".",
                r#"pattern "." in "track_files" names no file"#,
            ),
            (
                RuleKey::TrackDirs,
                "?[?*-\n",
                r#"invalid glob "?[?*-\n" in "track_dirs": invalid range; '*' > '\n'"#,
            ),
        ] {
            assert_eq!(refusal(key, pattern), want);
        }
    }
}
