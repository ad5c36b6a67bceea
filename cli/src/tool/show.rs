//! `backup-tool show NAME`: one increment's metadata and files, grouped per folder.

use std::io::Write;

use backup_core::explore::walk::CatalogWalk;
use backup_core::explore::{catalog, point};
use serde::Serialize;

use super::out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup show latest\n  \
    backup-tool /media/usb/backup show backup_20240105_100000 --json")]
pub struct Args {
    /// The increment (`backup_YYYYMMDD_HHMMSS`), `latest` for the newest increment folder,
    /// or a time (the newest increment at or before it).
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct FileJson<'a> {
    path: &'a backup_core::RelPath,
    category: backup_core::Category,
    op: backup_core::Op,
    size: u64,
    mtime_ns: i64,
    kind: backup_core::FileKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

#[derive(Serialize)]
struct ShowHead {
    increment: catalog::IncrementRow,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let (backup, mut o) = super::open(repo, None, args.json)?;
    let incs = backup.increments()?;
    let rec = point::resolve_increment(&args.name, &incs, repo)?;
    let (row, rec) = catalog::show(&backup, &rec.name)?;
    // The catalog is streamed folder by folder: memory is one folder of it.
    let files = CatalogWalk::of(backup.index(), &rec, None, None)?;
    if args.json {
        o.json_begin(&ShowHead { increment: row }, "files")?;
        for item in files {
            let (p, e) = item?;
            o.json_item(&FileJson {
                path: &p,
                category: e.category,
                op: e.op(),
                size: e.size,
                mtime_ns: e.mtime.ns,
                kind: e.kind,
                mode: e.mode,
                hash: e.hash.map(|h| h.to_hex()),
            })?;
        }
        o.json_end(&serde_json::json!({}))?;
        o.w.flush()?;
        return Ok(0);
    }
    writeln!(o.w, "{}", o.paint("1", row.name.as_str()))?;
    writeln!(o.w, "  time:      {}", row.time)?;
    if !row.timestamp.is_empty() {
        writeln!(o.w, "  recorded:  {}", out::show(&row.timestamp))?;
    }
    writeln!(
        o.w,
        "  files:     {} ({} new, {} changed, {} deleted)",
        row.files, row.new, row.changed, row.deleted
    )?;
    writeln!(o.w, "  size:      {}", out::size(row.bytes))?;
    if let Some(x) = row.exclusive_bytes {
        writeln!(
            o.w,
            "  exclusive: {} (freed if this increment is pruned)",
            out::size(x)
        )?;
    }
    let mut last_dir = None;
    for item in files {
        let (p, e) = item?;
        let dir = out::dir_of(&p);
        if last_dir.as_ref() != Some(&dir) {
            let label = if dir.is_empty() {
                "./".to_owned()
            } else {
                dir.clone()
            };
            writeln!(o.w, "  {}", o.paint("34;1", &label))?;
            last_dir = Some(dir);
        }
        let op = format!("{:?}", e.op()).to_lowercase();
        writeln!(
            o.w,
            "    {:<40} {:>10}  {}  {}",
            out::name_of(&p),
            out::size(e.size),
            out::date_ns(e.mtime.ns),
            o.status(&op)
        )?;
    }
    for (key, message) in backup.index().increment_problems(rec.id)? {
        eprintln!(
            "backup-tool: warning: an entry of {}'s metadata was skipped{}: {message}",
            rec.name,
            key.map(|k| format!(" ({})", out::show(&k)))
                .unwrap_or_default()
        );
    }
    o.w.flush()?;
    Ok(0)
}
