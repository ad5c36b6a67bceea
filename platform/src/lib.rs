//! The OS edges of the backup system: durable file-system primitives used by the engine, and
//! the adapters that expose a neutral read-only tree through FUSE (Linux/macOS) or WinFsp.
//!
//! This crate knows nothing about backups, so `core` and `mountfs` can both depend on it. The
//! FUSE adapter sits behind the `fuse` feature, so those two never build a FUSE library.

pub mod dir;
pub mod fs;
pub mod meta;
pub mod rofs;
pub mod sandbox;
pub mod sparse;

#[cfg(all(unix, feature = "fuse"))]
pub mod fuse;

#[cfg(windows)]
pub mod winfsp;

/// The test rule of `backup_tests::capability::under_ci` (this crate's tests cannot use that
/// crate, which builds on this one): under CI a missing capability is a failure, not a skip.
#[cfg(test)]
pub(crate) fn under_ci() -> bool {
    std::env::var("CI")
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
        .unwrap_or(false)
}
