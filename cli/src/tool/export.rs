//! `backup-tool export-mirror-json [FILE]`: the mirror's state as a `mirror.json`, written
//! from the index, for people who still run the original tool on this backup.

use std::io::Write;
use std::path::PathBuf;

use backup_core::explore::export;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup export-mirror-json --flat    DIST/mirror.json for the original tool\n  \
    backup-tool /media/usb/backup export-mirror-json state.json\n  \
    backup-tool /media/usb/backup export-mirror-json - | jq '.files | length'\n\n\
Writing DIST/mirror.json takes the backup's lock (it is refused while a backup runs).")]
pub struct Args {
    /// Where to write (`-`: standard output). Default: DIST/mirror.json, the file the
    /// original tool reads.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The original tool's flat map `{path: {size, mtime, tracked}}` instead of schema 2.
    #[arg(long)]
    pub flat: bool,
    /// Machine-readable summary on stdout (not with `-`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let to_stdout = args.file.as_deref() == Some(std::path::Path::new("-"));
    if to_stdout && args.json {
        return Err(backup_core::explore::ExploreError::Refused(
            "--json describes a file written; with `-` the document itself is on stdout".into(),
        )
        .into());
    }
    let target = match &args.file {
        _ if to_stdout => None,
        Some(f) => Some(f.clone()),
        None => Some(repo.mirror_index_path()),
    };
    // Writing into the backup is a change of it: the writer's lock, so no run interleaves.
    let inside = target.as_ref().is_some_and(|t| {
        let dist = repo
            .root()
            .canonicalize()
            .unwrap_or_else(|_| repo.root().to_path_buf());
        backup_core::explore::restore::resolve_existing_prefix(t).starts_with(dist)
    });
    let lock = if inside {
        Some(repo.lock_for_writing()?)
    } else {
        None
    };
    let (backup, mut o) = super::open(repo, lock.as_ref(), args.json || to_stdout)?;
    let Some(target) = target else {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        export::write(&backup, &mut w, args.flat)?;
        w.flush()?;
        return Ok(0);
    };
    // A temporary sibling renamed into place: a reader never sees half a file.
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".mirror.json.tmp-")
        .tempfile_in(&dir)
        .map_err(|e| anyhow::anyhow!("create a temporary file in {}: {e}", dir.display()))?;
    let entries = {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        let n = export::write(&backup, &mut w, args.flat)?;
        w.flush()?;
        n
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| anyhow::anyhow!("write {}: {e}", target.display()))?;
    tmp.persist(&target)
        .map_err(|e| anyhow::anyhow!("write {}: {}", target.display(), e.error))?;
    if inside && target == repo.mirror_index_path() {
        let _ = backup_platform::fs::fsync_dir(repo.root());
        backup.index().mark_mirror_json_current(repo)?;
    }
    let format = if args.flat { "flat" } else { "schema-2" };
    if args.json {
        o.json(&serde_json::json!({
            "written": target.display().to_string(),
            "entries": entries,
            "format": format,
        }))?;
    } else {
        writeln!(
            o.w,
            "wrote {} ({} entries, {})",
            target.display(),
            entries,
            if args.flat {
                "the original tool's flat map"
            } else {
                "schema 2"
            }
        )?;
    }
    o.w.flush()?;
    Ok(0)
}
