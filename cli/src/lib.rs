//! Shared code of the `backup` and `backup-tool` binaries.

pub mod exit;
pub mod tool;
