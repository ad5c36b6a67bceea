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
pub mod serve;
pub mod show;
pub mod target;

/// Exit status for a command that failed as a whole: a refused request (bad argument, unknown
/// increment, nothing to do safely) is 2, anything else 1.
pub fn error_status(e: &anyhow::Error) -> i32 {
    use backup_core::explore::ExploreError;
    match e.downcast_ref::<ExploreError>() {
        Some(
            ExploreError::BadArgument { .. }
            | ExploreError::NoSuchIncrement(_)
            | ExploreError::Refused(_),
        ) => crate::exit::REFUSED,
        _ => crate::exit::PARTIAL,
    }
}

/// Loads the backup's metadata for a command.
pub fn load(repo: &backup_core::Repository) -> anyhow::Result<backup_core::explore::Backup> {
    Ok(backup_core::explore::Backup::load(repo)?)
}
