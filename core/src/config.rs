//! Configuration: one JSON file per profile (SPEC §1), validated into a [`Config`] that cannot
//! hold an invalid state. Everything wrong is refused before anything is written.
//!
//! INTERFACE STUB — the fields and signatures below are the contract between the config/selection
//! work and the pipeline; the bodies are to be written.

use std::path::{Path, PathBuf};

/// Which rule wins for a file under both an include dir and a track dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DirectoryPriority {
    #[default]
    Track,
    Include,
}

/// A validated profile.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// Absolute, `~` expanded, an existing directory.
    pub src: PathBuf,
    /// Absolute, `~` expanded; may not exist yet; never inside... `src` may contain it.
    pub dist: PathBuf,
    pub include_dirs: Vec<String>,
    pub track_dirs: Vec<String>,
    pub exclude_dirs: Vec<String>,
    pub include_files: Vec<String>,
    pub track_files: Vec<String>,
    pub exclude_files: Vec<String>,
    pub directory_priority: DirectoryPriority,
    pub preserved_dirs: Vec<String>,
    /// ≥ 1; defaults to the number of CPUs.
    pub max_workers: usize,
}

/// Why a configuration was refused. Each variant's message is one clear line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file: tried {0}")]
    NotFound(String),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// The lookup order of SPEC §1: `explicit`, then `./config.json`, then the platform config
    /// dir (`~/.config/backup/config.json` on Linux).
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        let _ = explicit;
        todo!("config lookup")
    }

    /// Reads and validates one profile.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let _ = path;
        todo!("config load")
    }
}
