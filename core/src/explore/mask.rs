//! File masks: `--mask` of search/delete (glob, or substring without wildcards) and the
//! PATH/GLOB selection of restore (exact path or folder, or glob).

use globset::{GlobBuilder, GlobMatcher};

use super::ExploreError;
use crate::relpath::RelPath;

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<GlobMatcher, ExploreError> {
    GlobBuilder::new(pattern)
        // `docs/*.md` means one level, as in a shell; `**` crosses folders.
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ExploreError::bad("mask", pattern, e.to_string()))
}

#[derive(Clone, Debug)]
enum Matcher {
    Glob(GlobMatcher),
    Substring(Vec<u8>),
}

/// One mask. Without `/` it is matched against the file name, with `/` against the whole
/// relative path.
#[derive(Clone, Debug)]
struct Mask {
    matcher: Matcher,
    on_path: bool,
}

impl Mask {
    fn is_match(&self, rel: &RelPath) -> bool {
        let subject: &[u8] = if self.on_path {
            rel.as_bytes()
        } else {
            rel.file_name()
        };
        match &self.matcher {
            Matcher::Glob(g) => g.is_match(crate::relpath::os_from_bytes(subject)),
            Matcher::Substring(needle) => subject.windows(needle.len()).any(|w| w == needle),
        }
    }
}

/// The `--mask` list: a file matches when any mask matches; no mask matches everything.
#[derive(Clone, Debug, Default)]
pub struct Masks {
    masks: Vec<Mask>,
}

impl Masks {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Masks, ExploreError> {
        let mut masks = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty() {
                return Err(ExploreError::bad("mask", p, "empty mask"));
            }
            let on_path = p.contains('/');
            let matcher = if has_wildcard(p) {
                Matcher::Glob(glob(p)?)
            } else {
                Matcher::Substring(p.as_bytes().to_vec())
            };
            masks.push(Mask { matcher, on_path });
        }
        Ok(Masks { masks })
    }

    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    pub fn is_match(&self, rel: &RelPath) -> bool {
        self.masks.is_empty() || self.masks.iter().any(|m| m.is_match(rel))
    }
}

#[derive(Clone, Debug)]
enum Select {
    /// That file, or everything below that folder.
    Path(RelPath),
    Glob {
        glob: GlobMatcher,
        on_path: bool,
    },
}

/// The PATH/GLOB arguments of restore: no argument selects everything.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    items: Vec<Select>,
}

impl Selection {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Selection, ExploreError> {
        let mut items = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.as_ref();
            if has_wildcard(p) {
                let trimmed = p.trim_start_matches("./").trim_start_matches('/');
                items.push(Select::Glob {
                    glob: glob(trimmed)?,
                    on_path: trimmed.contains('/'),
                });
            } else {
                items.push(Select::Path(super::parse_user_path(p)?));
            }
        }
        Ok(Selection { items })
    }

    /// No PATH/GLOB given: everything.
    pub fn is_all(&self) -> bool {
        self.items.is_empty()
    }

    /// When every item is a path (no glob): those paths, sorted, without any that lies below
    /// another — the only places a walk needs to visit. `None` when a glob (or nothing) was
    /// given: everything must be walked.
    pub fn roots(&self) -> Option<Vec<RelPath>> {
        if self.items.is_empty() {
            return None;
        }
        let mut paths = Vec::with_capacity(self.items.len());
        for s in &self.items {
            match s {
                Select::Path(p) => paths.push(p.clone()),
                Select::Glob { .. } => return None,
            }
        }
        paths.sort();
        let mut out: Vec<RelPath> = Vec::with_capacity(paths.len());
        for p in paths {
            if !out.iter().any(|r| p.starts_with(r)) {
                out.push(p);
            }
        }
        Some(out)
    }

    pub fn is_match(&self, rel: &RelPath) -> bool {
        self.items.is_empty()
            || self.items.iter().any(|s| match s {
                Select::Path(p) => rel.starts_with(p),
                Select::Glob { glob, on_path } => {
                    let subject = if *on_path {
                        rel.as_bytes()
                    } else {
                        rel.file_name()
                    };
                    glob.is_match(crate::relpath::os_from_bytes(subject))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::parse(s).unwrap()
    }

    #[test]
    fn masks_glob_names_paths_and_substrings() {
        let m = Masks::new(&["*.py", "docs/*.md", "report"]).unwrap();
        assert!(m.is_match(&rp("a/b/x.py")));
        assert!(m.is_match(&rp("docs/x.md")));
        assert!(!m.is_match(&rp("docs/sub/x.md")));
        assert!(m.is_match(&rp("a/annual-report-2024.pdf")));
        assert!(!m.is_match(&rp("report-dir/x.txt")));
        assert!(Masks::new(&["[a"]).is_err());
    }

    #[test]
    fn selection_paths_folders_and_globs() {
        let s = Selection::new(&["projects/", "*.pdf"]).unwrap();
        assert!(s.is_match(&rp("projects/a/b.txt")));
        assert!(!s.is_match(&rp("projects2/a")));
        assert!(s.is_match(&rp("x/y.pdf")));
        assert!(Selection::new(&["../etc"]).is_err());
        assert!(Selection::new::<&str>(&[]).unwrap().is_match(&rp("z")));
        let roots = Selection::new(&["b/c", "a", "b", "a/x"]).unwrap().roots();
        assert_eq!(roots, Some(vec![rp("a"), rp("b")]));
        assert_eq!(s.roots(), None);
    }
}
