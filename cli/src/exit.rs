//! Exit statuses, in one place (`docs/tool.md`, "Exit status").

/// Everything done.
pub const SUCCESS: i32 = 0;
/// Finished, but some files failed (each named on stderr); also `check` finding problems.
pub const PARTIAL: i32 = 1;
/// Refused before doing anything: bad config, lock held, unusable `dist`, not a backup.
pub const REFUSED: i32 = 2;
