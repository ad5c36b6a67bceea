//! `backup-tool recreate`: rebuild increment metadata from the files on disk.

use std::io::Write;

use backup_core::explore::recreate::{self, RebuildStatus};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup recreate                       increments whose metadata is unreadable\n  \
    backup-tool /media/usb/backup recreate --backup backup_20240105_100000 --force")]
pub struct Args {
    /// Only this increment.
    #[arg(long, value_name = "NAME")]
    pub backup: Option<backup_core::IncrementName>,
    /// Rebuild even metadata that reads fine.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let lock = repo.lock_for_writing()?;
    let (backup, mut o) = super::open(repo, Some(&lock), args.json)?;
    let pb = crate::progress::bar("recreating");
    let sink = crate::progress::work_sink(&pb, "increments");
    let results =
        recreate::recreate_with_progress(&backup, args.backup.as_ref(), args.force, &lock, &sink);
    crate::progress::finish(&pb);
    let results = results?;
    let failed = results
        .iter()
        .filter(|r| r.status == RebuildStatus::Failed)
        .count();
    if args.json {
        o.json(&serde_json::json!({ "increments": results }))?;
    } else {
        for r in &results {
            match r.status {
                RebuildStatus::Rebuilt => writeln!(o.w, "rebuilt {} ({} files)", r.name, r.files)?,
                RebuildStatus::Kept => writeln!(
                    o.w,
                    "kept {} (metadata reads fine; --force rebuilds it)",
                    r.name
                )?,
                _ => eprintln!(
                    "backup-tool: {}: {}",
                    r.name,
                    r.error.as_deref().unwrap_or("failed")
                ),
            }
        }
    }
    o.w.flush()?;
    Ok(if failed > 0 { crate::exit::PARTIAL } else { 0 })
}
