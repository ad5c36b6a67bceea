//! `backup-tool` subcommands, one module each.

pub mod check;
pub mod delete;
pub mod diff;
pub mod export;
pub mod list;
pub mod log;
pub mod mount;
pub mod out;
pub mod prune;
pub mod recreate;
pub mod restore;
pub mod search;
pub mod serve;
pub mod show;
pub mod target;

/// Exit status for a command that failed as a whole: a refused request (bad argument, unknown
/// increment, nothing to do safely) is 2, anything else 1.
pub fn error_status(e: &anyhow::Error) -> i32 {
    use backup_core::explore::ExploreError;
    use backup_core::repo::RepoError;
    let locked = |r: &RepoError| matches!(r, RepoError::Locked { .. });
    match e.downcast_ref::<ExploreError>() {
        Some(
            ExploreError::BadArgument { .. }
            | ExploreError::NoSuchIncrement(_)
            | ExploreError::Damaged { .. }
            | ExploreError::Refused(_),
        ) => crate::exit::REFUSED,
        Some(ExploreError::Repo(r)) if locked(r) => crate::exit::REFUSED,
        _ if e.downcast_ref::<RepoError>().is_some_and(locked) => crate::exit::REFUSED,
        _ => crate::exit::PARTIAL,
    }
}

/// The writer lock for a command that changes the backup; a dry run changes nothing and runs
/// beside a backup without it.
pub fn lock_unless(
    repo: &backup_core::Repository,
    dry_run: bool,
) -> anyhow::Result<Option<backup_core::repo::WriteLock>> {
    if dry_run {
        Ok(None)
    } else {
        Ok(Some(repo.lock_for_writing()?))
    }
}

/// Opens the backup's index for a command (a writer passes the lock it took first) and the
/// output that carries what is worth saying once about the index (created, imported, increments
/// changed by hand): on stderr now, or in the JSON document's `"notes"`.
pub fn open(
    repo: &backup_core::Repository,
    lock: Option<&backup_core::repo::WriteLock>,
    json: bool,
) -> anyhow::Result<(backup_core::explore::Backup, out::Out)> {
    let backup = backup_core::explore::Backup::open(repo, lock)?;
    let o = out::Out::with_notes(backup.notes(), json);
    Ok((backup, o))
}

/// Warns (on stderr) about increments whose metadata cannot be read, which a command that
/// looks at every increment could otherwise pass over in silence.
pub fn warn_unreadable(names: &[backup_core::IncrementName], what: &str) {
    for n in names {
        eprintln!(
            "backup-tool: warning: increment {n} has no readable metadata: {what} (see `check`; repair with `recreate --backup {n}`)"
        );
    }
}

/// A path argument of `log` or `restore` as the backup names it: relative to `src`. An
/// absolute one is accepted when the backup was named through its profile (so `src` is known)
/// and lies inside that `src`; a glob keeps its wildcards.
pub fn source_relative(
    arg: &str,
    profile: Option<&backup_core::config::Config>,
) -> anyhow::Result<String> {
    use backup_core::explore::ExploreError;
    let p = std::path::Path::new(arg);
    if !p.is_absolute() {
        return Ok(arg.to_owned());
    }
    let Some(config) = profile else {
        return Err(ExploreError::Refused(format!(
            "{arg} is absolute, but the source folder of this backup is unknown: name the backup through its profile (--config) or give the path relative to src"
        ))
        .into());
    };
    let src = &config.src;
    // `src` is canonical; the argument may be spelt through a symlink.
    let resolved = p
        .parent()
        .and_then(|d| d.canonicalize().ok())
        .and_then(|d| p.file_name().map(|n| d.join(n)));
    let rel = p
        .strip_prefix(src)
        .ok()
        .map(std::path::Path::to_path_buf)
        .or_else(|| resolved.and_then(|r| r.strip_prefix(src).ok().map(|r| r.to_path_buf())));
    match rel {
        Some(r) if !r.as_os_str().is_empty() => Ok(r.to_string_lossy().into_owned()),
        Some(_) => Ok(String::new()),
        None => Err(ExploreError::Refused(format!(
            "{arg} is not inside the profile's src {}",
            src.display()
        ))
        .into()),
    }
}

/// For the long-running servers (`mount`, `serve`): one malloc arena for all threads. With
/// glibc's default (up to eight per core) each request thread keeps its own freed memory, and
/// a mount's daemon grew to 325 MiB over `find`s through eleven million-file snapshots
/// (`bench/mount_scale.sh`); with one it stays at 107 MiB, at the same speed (requests come
/// one at a time from a walk). Call before any thread starts.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
