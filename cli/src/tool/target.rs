//! Which backup a `backup-tool` command works on: a leading path, or the `dist` of a config
//! profile found by the same lookup as `backup` (`--config`, `./config.json`, the platform
//! config dir).

use std::path::{Path, PathBuf};

use backup_core::config::{Config, ConfigError, RawConfig};
use backup_core::Repository;

/// The profile's `dist`. A profile whose `src` is gone still names its backup: restoring is
/// exactly what people do after losing the source disk, so only the profile's own validity
/// (JSON, keys, globs) is required here, not the existence of `src`.
fn dist_of_config(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let file = Config::locate(explicit).map_err(|e| match e {
        ConfigError::NotFound(tried) if explicit.is_none() => format!(
            "name a backup folder (backup-tool /path/to/dist COMMAND) or a profile with --config; no config file at {tried}"
        ),
        e => e.to_string(),
    })?;
    match Config::load(&file) {
        Ok(c) => Ok(c.dist),
        Err(load_error) => {
            let text = std::fs::read_to_string(&file).map_err(|_| load_error.to_string())?;
            let raw = RawConfig::parse(&text).map_err(|_| load_error.to_string())?;
            let file = std::path::absolute(&file).unwrap_or(file);
            let base = file.parent().unwrap_or(Path::new("/"));
            Ok(base.join(expand_tilde(&raw.dist)))
        }
    }
}

fn expand_tilde(s: &str) -> PathBuf {
    match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => match dirs::home_dir() {
            Some(home) => home.join(rest.trim_start_matches('/')),
            None => PathBuf::from(s),
        },
        _ => PathBuf::from(s),
    }
}

/// Opens the backup, or says clearly why not (the caller exits with status 2).
pub fn open(backup: Option<&Path>, config: Option<&Path>) -> Result<Repository, String> {
    let dist = match backup {
        Some(p) => p.to_path_buf(),
        None => dist_of_config(config)?,
    };
    if !dist.is_dir() {
        return Err(format!(
            "{} is not a backup: no such folder",
            dist.display()
        ));
    }
    Repository::open(&dist).map_err(|e| e.to_string())
}

/// The profile behind the backup, when there is one: the profile the backup was found
/// through, or `--config` naming the same `dist` as an explicit backup path. Used for the
/// profile's `"retention"` and to turn absolute source paths into relative ones.
pub fn profile(backup: Option<&Path>, config: Option<&Path>) -> Option<Config> {
    if backup.is_some() && config.is_none() {
        return None;
    }
    let c = Config::locate(config).and_then(|p| Config::load(&p)).ok()?;
    match backup {
        None => Some(c),
        Some(b) => {
            let same = match (b.canonicalize(), c.dist.canonicalize()) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            };
            same.then_some(c)
        }
    }
}
