//! Which backup a `backup-tool` command works on: a leading path, or the `dist` of a config
//! profile found by the same lookup as `backup`.

use std::path::{Path, PathBuf};

use backup_core::Repository;

/// The profile's `dist`, read leniently: restoring must work even when the profile's `src`
/// is gone (a dead disk is when people restore), so only `dist`/`dst` is needed.
fn dist_of_config(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let file = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let mut tried = vec![PathBuf::from("config.json")];
            if let Some(d) = dirs::config_dir() {
                tried.push(d.join("backup").join("config.json"));
            }
            match tried.iter().find(|p| p.is_file()) {
                Some(p) => p.clone(),
                None => {
                    return Err(format!(
                        "name a backup folder (backup-tool /path/to/dist COMMAND) or a profile with --config; no config file at {}",
                        tried
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ))
                }
            }
        }
    };
    let text = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: malformed JSON: {e}", file.display()))?;
    let dist = v
        .get("dist")
        .or_else(|| v.get("dst"))
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("{}: no \"dist\" key", file.display()))?;
    Ok(expand_tilde(dist))
}

fn expand_tilde(s: &str) -> PathBuf {
    if s == "~" {
        return dirs::home_dir().unwrap_or_else(|| PathBuf::from(s));
    }
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(h) = dirs::home_dir() {
            return h.join(rest);
        }
    }
    PathBuf::from(s)
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
