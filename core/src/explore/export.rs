//! `export-mirror-json`: the mirror's state as a `mirror.json`, streamed from the index, for
//! people who still run the original tool on this backup (it reads only that file) or want
//! the state in plain JSON. Ours is schema 2 (`docs/format.md`); `flat` writes the original
//! tool's map `{path: {size, mtime, tracked}}`.

use std::io::Write;

use super::walk::MirrorWalk;
use super::{Backup, ExploreError};
use crate::format::{FileKind, IndexEntry};
use crate::relpath::RelPath;

/// Writes the mirror's state to `w`; returns the number of entries written (files and
/// symlinks: folders are not part of `mirror.json`).
pub fn write(backup: &Backup, w: &mut dyn Write, flat: bool) -> Result<u64, ExploreError> {
    let io = |e: std::io::Error| ExploreError::Io {
        op: "write",
        path: "mirror.json".into(),
        source: e,
    };
    let mut n = 0u64;
    let mut failed: Option<ExploreError> = None;
    let mut rows = MirrorWalk::new(backup.index(), None).filter_map(|r| match r {
        Ok((_, e)) if e.kind == FileKind::Dir => None,
        Ok(row) => {
            n += 1;
            Some(Ok(row))
        }
        Err(e) => {
            failed = Some(e.into());
            Some(Err(std::io::Error::other("the index could not be read")))
        }
    });
    let written = if flat {
        write_flat(w, &mut rows)
    } else {
        let updated = backup.index().mirror_updated()?;
        crate::format::write_mirror_json(w, updated.as_deref(), &mut rows)
    };
    drop(rows);
    if let Some(e) = failed {
        return Err(e);
    }
    written.map_err(io)?;
    w.flush().map_err(io)?;
    Ok(n)
}

/// The original tool's flat map. Its mtime is the float Python's `os.stat` reports (seconds
/// plus nanoseconds times 1e-9), so a run of that tool sees unchanged files as unchanged; a
/// name that is not UTF-8 is written as Python writes it (each undecodable byte as the lone
/// surrogate `\udcXX` of `surrogateescape`).
fn write_flat(
    w: &mut dyn Write,
    rows: &mut dyn Iterator<Item = std::io::Result<(RelPath, IndexEntry)>>,
) -> std::io::Result<()> {
    #[derive(serde::Serialize)]
    struct Flat {
        size: u64,
        mtime: f64,
        tracked: bool,
    }
    w.write_all(b"{")?;
    let mut first = true;
    for row in rows {
        let (p, e) = row?;
        w.write_all(if first { b"\n" } else { b",\n" })?;
        first = false;
        write_python_key(w, p.as_bytes())?;
        w.write_all(b": ")?;
        let secs = e.mtime.ns.div_euclid(1_000_000_000) as f64;
        let nanos = e.mtime.ns.rem_euclid(1_000_000_000) as f64;
        serde_json::to_writer(
            &mut *w,
            &Flat {
                size: e.size,
                mtime: secs + nanos * 1e-9,
                tracked: e.tracked,
            },
        )?;
    }
    w.write_all(b"\n}\n")
}

fn write_python_key(w: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        let s = serde_json::to_string(chunk.valid())?;
        out.push_str(&s[1..s.len() - 1]);
        for b in chunk.invalid() {
            out.push_str(&format!("\\udc{b:02x}"));
        }
    }
    out.push('"');
    w.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_written_as_python_writes_them() {
        let mut out = Vec::new();
        super::write_python_key(&mut out, b"docs/latin1-\xe9t\xe9 \"q\"").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""docs/latin1-\udce9t\udce9 \"q\"""#
        );
    }
}
