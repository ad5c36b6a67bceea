//! `backup-tool show NAME`: one increment's metadata and files, grouped per folder.

use std::io::Write;

use backup_core::explore::catalog;
use serde::Serialize;

use super::out::{self, Out};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup show latest\n  \
    backup-tool /media/usb/backup show backup_20240105_100000 --json")]
pub struct Args {
    /// The increment (`backup_YYYYMMDD_HHMMSS`), or `latest` for the newest.
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
struct ShowJson<'a> {
    increment: catalog::IncrementRow,
    files: Vec<FileJson<'a>>,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let backup = super::load(repo)?;
    let name = if args.name == "latest" {
        match backup.increments.last() {
            Some(i) => i.name.clone(),
            None => {
                return Err(backup_core::explore::ExploreError::Refused(
                    "the backup has no increment yet (`latest` names the newest)".into(),
                )
                .into())
            }
        }
    } else {
        args.name
            .parse::<backup_core::IncrementName>()
            .map_err(|m| backup_core::explore::ExploreError::bad("increment", &args.name, m))?
    };
    let (row, inc) = catalog::show(&backup, &name)?;
    let mut o = Out::new();
    if args.json {
        let files = inc
            .meta
            .file_catalog
            .iter()
            .map(|(p, e)| FileJson {
                path: p,
                category: e.category,
                op: e.op(),
                size: e.size,
                mtime_ns: e.mtime.ns,
                kind: e.kind,
                mode: e.mode,
                hash: e.hash.map(|h| h.to_hex()),
            })
            .collect();
        o.json(&ShowJson {
            increment: row,
            files,
        })?;
        return Ok(0);
    }
    writeln!(o.w, "{}", o.paint("1", row.name.as_str()))?;
    writeln!(o.w, "  time:      {}", row.time)?;
    if !row.timestamp.is_empty() {
        writeln!(o.w, "  recorded:  {}", row.timestamp)?;
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
    for (p, e) in &inc.meta.file_catalog {
        let dir = out::dir_of(p);
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
            out::name_of(p),
            out::size(e.size),
            out::date_ns(e.mtime.ns),
            o.status(&op)
        )?;
    }
    o.w.flush()?;
    Ok(0)
}
