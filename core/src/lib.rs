//! The backup engine: configuration, selection rules, scan → plan → apply → commit, the
//! repository format at `dist`, point-in-time history and consistency checks.
//!
//! Nothing here prints: functions return typed results and report progress through events.

pub mod apply;
pub mod commit;
pub mod config;
pub mod durable;
pub mod explore;
pub mod format;
pub mod history;
pub mod identity;
pub mod index;
pub mod journal;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod relpath;
pub mod repo;
pub mod scan;
pub mod selection;
mod text;

pub use format::{
    CatalogEntry, Category, ContentHash, FileKind, IncrementMeta, IndexEntry, MTime, MirrorIndex,
    Op,
};
pub use history::{History, Holder, Version};
pub use relpath::RelPath;
pub use repo::{IncrementName, Repository};
