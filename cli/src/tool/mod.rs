//! `backup-tool` subcommands, one module each.

pub mod check;
pub mod delete;
pub mod diff;
pub mod list;
pub mod log;
pub mod mount;
pub mod prune;
pub mod recreate;
pub mod restore;
pub mod search;
pub mod show;
