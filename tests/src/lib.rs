//! Test environment shared by the end-to-end tests: temporary source trees, config files, and
//! the real `backup` / `backup-tool` binaries.

pub mod mount;
pub mod mount_fixture;
