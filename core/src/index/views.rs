//! Queries of the `backup-tool` commands (`core/src/explore`): one increment's folders in path
//! order and one folder of its catalog at a time (`show`, `search`, `check`). Each is bounded
//! by what it answers: the folders of one increment and one folder's entries, never the whole
//! catalog.

use rusqlite::params;

use super::codec;
use super::{Index, Result};
use crate::format::{CatalogEntry, Category};
use crate::relpath::RelPath;

/// The setting that records when the mirror's state was last written (RFC 3339): by the engine
/// at the end of a run, or from the `updated` field of an imported `mirror.json`.
pub const MIRROR_UPDATED: &str = "mirror_updated";

fn category_filter(c: Option<Category>) -> Option<i64> {
    c.map(codec::category_code)
}

impl Index {
    /// The folders (ids) holding events of increment `inc` (of `category` when given).
    pub(crate) fn increment_dirs(&self, inc: i64, category: Option<Category>) -> Result<Vec<i64>> {
        self.conn()
            .prepare_cached(
                "SELECT DISTINCT dir FROM events INDEXED BY events_by_inc
                 WHERE inc = ?1 AND origin = 0 AND (?2 IS NULL OR category = ?2) ORDER BY dir",
            )
            .and_then(|mut s| {
                s.query_map(params![inc, category_filter(category)], |r| r.get(0))?
                    .collect()
            })
            .map_err(self.err("list an increment's folders"))
    }

    /// The events of increment `inc` directly in folder `dir` (of `category` when given), by
    /// name.
    pub fn increment_dir_events(
        &self,
        inc: i64,
        dir: i64,
        category: Option<Category>,
    ) -> Result<Vec<(Vec<u8>, CatalogEntry)>> {
        self.conn()
            .prepare_cached(&format!(
                "SELECT name, {} FROM events INDEXED BY events_by_inc
                 WHERE inc = ?1 AND origin = 0 AND dir = ?2 AND (?3 IS NULL OR category = ?3)
                 ORDER BY name",
                codec::EVENT_COLUMNS
            ))
            .and_then(|mut s| {
                s.query_map(params![inc, dir, category_filter(category)], |r| {
                    Ok((r.get(0)?, codec::event_row_at(r, 1)?))
                })?
                .collect()
            })
            .map_err(self.err("read an increment's folder"))
    }

    /// The folders holding events of increment `inc` (of `category`), sorted by path (`None`
    /// is the top folder).
    pub fn increment_folders_sorted(
        &self,
        inc: i64,
        category: Option<Category>,
    ) -> Result<Vec<(i64, Option<RelPath>)>> {
        let mut dirs = Vec::new();
        for id in self.increment_dirs(inc, category)? {
            dirs.push((id, self.dir_path(id)?));
        }
        dirs.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(dirs)
    }

    /// Whether the catalogs (`mirror = false`) or the mirror (`true`) record extended
    /// attributes: some entry has xattrs, or (catalogs) some version or folder records its
    /// owner — the format that records owners records xattrs too. A restore then sets each
    /// entry's xattrs exactly; otherwise it leaves them alone.
    pub fn records_attributes(&self, mirror: bool) -> Result<bool> {
        let sql = if mirror {
            "SELECT EXISTS (SELECT 1 FROM mirror WHERE extra LIKE '%\"xattrs\"%')"
        } else {
            "SELECT EXISTS (SELECT 1 FROM events WHERE origin = 0
                             AND (uid IS NOT NULL OR extra LIKE '%\"xattrs\"%'))
                 OR EXISTS (SELECT 1 FROM folders WHERE uid IS NOT NULL
                             OR extra LIKE '%\"xattrs\"%')"
        };
        self.conn()
            .query_row(sql, [], |r| r.get(0))
            .map_err(self.err("look for recorded attributes"))
    }

    /// When the mirror's state was last written, if known (see [`MIRROR_UPDATED`]).
    pub fn mirror_updated(&self) -> Result<Option<String>> {
        self.setting(MIRROR_UPDATED)
    }
}
