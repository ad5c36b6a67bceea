//! `backup-tool` subcommands, one module each.

pub mod check;
pub mod delete;
pub mod diff;
pub mod list;
pub mod log;
pub mod mount;
pub mod out;
pub mod prune;
pub mod recreate;
pub mod restore;
pub mod search;
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

/// Loads the backup's metadata for a command.
pub fn load(repo: &backup_core::Repository) -> anyhow::Result<backup_core::explore::Backup> {
    Ok(backup_core::explore::Backup::load(repo)?)
}
