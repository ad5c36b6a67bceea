//! `backup-tool search`: files matching masks and filters in every increment and the mirror,
//! grouped per increment and per folder; optionally a restore script for the hits.

use std::io::Write;
use std::path::{Path, PathBuf};

use backup_core::explore::mask::Masks;
use backup_core::explore::parse_user_path;
use backup_core::explore::search::{self, Hit, Location, Query, SizeRange, TimeRange};
use serde::Serialize;

use super::out::{self, Out};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /mnt/usb/backup search --mask '*.py' --mask '*.pdf'\n  \
    backup-tool /mnt/usb/backup search --mask report --size '>10M' --time 2024-01-01..2024-03-31\n  \
    backup-tool /mnt/usb/backup search --mask '*.odt' --generate-script restore.sh")]
pub struct Args {
    /// Glob (`*.py`, `docs/*.md`, `**/x`) or, without wildcards, a substring of the name.
    /// A mask with `/` matches the whole relative path. Repeat for several; none matches all.
    #[arg(long = "mask", short = 'm', value_name = "GLOB")]
    pub masks: Vec<String>,
    /// Size filter: `>100M`, `<1G`, `10K-2M` (K, M, G, T are powers of 1024).
    #[arg(long, allow_hyphen_values = true)]
    pub size: Option<String>,
    /// Modification-time filter: `2024-01-05`, `<D`, `>D`, `D..D` (local time).
    #[arg(long, allow_hyphen_values = true)]
    pub time: Option<String>,
    /// Only below this folder of the source.
    #[arg(long, value_name = "PREFIX")]
    pub path: Option<String>,
    /// Only the N newest increments (the mirror is searched too).
    #[arg(long, value_name = "N")]
    pub last_backups: Option<usize>,
    /// Leave the mirror out.
    #[arg(long)]
    pub no_mirror: bool,
    /// Print the full on-disk path of each stored file.
    #[arg(long)]
    pub full_paths: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Write a bash script that copies every hit to `TARGET/<increment or mirror>/<path>`
    /// (run it as `bash FILE [TARGET]`; TARGET defaults to ./restored).
    #[arg(long, value_name = "FILE")]
    pub generate_script: Option<PathBuf>,
}

pub fn query(args: &Args) -> anyhow::Result<Query> {
    Ok(Query {
        masks: Masks::new(&args.masks)?,
        size: args.size.as_deref().map(SizeRange::parse).transpose()?,
        time: args.time.as_deref().map(TimeRange::parse).transpose()?,
        path: args.path.as_deref().map(parse_user_path).transpose()?,
        last_backups: args.last_backups,
        skip_mirror: args.no_mirror,
    })
}

#[derive(Serialize)]
struct HitJson<'a> {
    #[serde(flatten)]
    hit: &'a Hit,
    /// Where the bytes are on disk (encoded like `path`: lossless for any name).
    stored: String,
}

#[derive(Serialize)]
struct Count {
    count: u64,
}

/// The human listing, grouped per place (an increment or the mirror) and per folder.
struct Human {
    last_loc: Option<Location>,
    last_dir: Option<String>,
    groups: u64,
}

impl Human {
    fn hit(&mut self, o: &mut Out, h: &Hit, stored: &Path, full_paths: bool) -> anyhow::Result<()> {
        if self.last_loc.as_ref() != Some(&h.location) {
            let label = match &h.location {
                Location::Mirror => "mirror".to_owned(),
                Location::Increment { name, .. } => name.clone(),
            };
            // Increments list track/ and deleted/ hits under one heading.
            let same_inc = matches!((&self.last_loc, &h.location),
                (Some(Location::Increment { name: a, .. }), Location::Increment { name: b, .. }) if a == b);
            if !same_inc {
                writeln!(o.w, "{}", o.paint("1;35", &label))?;
                self.groups += 1;
                self.last_dir = None;
            }
            self.last_loc = Some(h.location.clone());
        }
        if full_paths {
            writeln!(
                o.w,
                "  {}  {:>10}  {}  {}",
                out::show(&stored.to_string_lossy()),
                out::size(h.size),
                out::date_ns(h.mtime_ns),
                o.status(h.status)
            )?;
            return Ok(());
        }
        let dir = out::dir_of(&h.path);
        if self.last_dir.as_ref() != Some(&dir) {
            let label = if dir.is_empty() {
                "./".to_owned()
            } else {
                dir.clone()
            };
            writeln!(o.w, "  {}", o.paint("34;1", &label))?;
            self.last_dir = Some(dir);
        }
        writeln!(
            o.w,
            "    {:<40} {:>10}  {}  {}",
            out::name_of(&h.path),
            out::size(h.size),
            out::date_ns(h.mtime_ns),
            o.status(h.status)
        )?;
        Ok(())
    }
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let q = query(args)?;
    // Stored paths are absolute: a script or a reader run from elsewhere finds them.
    let dist = repo.root().canonicalize()?;
    let mut script = match &args.generate_script {
        Some(file) => {
            if backup_core::explore::restore::resolve_existing_prefix(file).starts_with(&dist) {
                return Err(backup_core::explore::ExploreError::Refused(format!(
                    "{} lies inside the backup; write the script somewhere else",
                    file.display()
                ))
                .into());
            }
            Some(Script::create(file, &dist)?)
        }
        None => None,
    };
    let (backup, mut o) = super::open(repo, None, args.json)?;
    if args.json {
        o.json_begin(&serde_json::json!({}), "hits")?;
    }
    let mut human = Human {
        last_loc: None,
        last_dir: None,
        groups: 0,
    };
    // Hits are written as they are found: memory does not grow with their number.
    let stats = search::search(&backup, &q, &mut |h: Hit| -> anyhow::Result<()> {
        let stored = search::hit_path(&dist, &h);
        if let Some(s) = &mut script {
            s.add(&h, &stored)?;
        }
        if args.json {
            o.json_item(&HitJson {
                hit: &h,
                stored: search::encode_path(&stored),
            })
        } else {
            human.hit(&mut o, &h, &stored, args.full_paths)
        }
    })?;
    super::warn_unreadable(&stats.unreadable, "its files were not searched");
    if let (Some(s), Some(file)) = (script, &args.generate_script) {
        s.finish()?;
        eprintln!(
            "wrote {} ({} files); run: bash {} [TARGET]",
            file.display(),
            stats.hits,
            file.display()
        );
    }
    if args.json {
        o.json_end(&Count { count: stats.hits })?;
        o.w.flush()?;
        return Ok(0);
    }
    writeln!(
        o.w,
        "{} in {}",
        crate::term::plural(stats.hits, "match", "matches"),
        crate::term::plural(human.groups, "place", "places")
    )?;
    o.w.flush()?;
    Ok(0)
}

/// `'...'` quoting: every byte is literal inside single quotes except `'` itself, which is
/// closed, escaped and reopened. Newlines, spaces, `$`, backticks and non-UTF-8 bytes are safe.
fn sh_quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The restore script of `--generate-script`, written hit by hit.
struct Script {
    w: std::io::BufWriter<std::fs::File>,
    file: PathBuf,
}

impl Script {
    fn create(file: &Path, dist: &Path) -> anyhow::Result<Script> {
        let f = std::fs::File::create(file)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", file.display()))?;
        let mut w = std::io::BufWriter::new(f);
        w.write_all(
            b"#!/usr/bin/env bash\n\
# Restore script written by `backup-tool search --generate-script`.\n\
# Copies each found file to TARGET/<increment or mirror>/<path> (TARGET: first argument,\n\
# default ./restored), keeping mode and mtime; symlinks are copied as symlinks.\n\
set -euo pipefail\n\
target=\"${1:-./restored}\"\n",
        )?;
        w.write_all(format!("# backup: {}\n", out::show(&dist.to_string_lossy())).as_bytes())?;
        Ok(Script {
            w,
            file: file.to_path_buf(),
        })
    }

    /// Copies `h` from `src` (absolute: the script may run from anywhere).
    fn add(&mut self, h: &Hit, src: &Path) -> anyhow::Result<()> {
        let loc = match &h.location {
            Location::Mirror => "mirror".to_owned(),
            Location::Increment { name, .. } => name.clone(),
        };
        let mut dest_rel = loc.clone().into_bytes();
        dest_rel.push(b'/');
        dest_rel.extend_from_slice(h.path.as_bytes());
        let mut dir_rel = loc.into_bytes();
        if let Some(p) = h.path.parent() {
            dir_rel.push(b'/');
            dir_rel.extend_from_slice(p.as_bytes());
        }
        let mut s = Vec::new();
        s.extend_from_slice(b"mkdir -p -- \"$target\"/");
        s.extend_from_slice(&sh_quote(&dir_rel));
        s.extend_from_slice(b"\ncp -P -p -- ");
        s.extend_from_slice(&sh_quote(src.as_os_str().as_encoded_bytes()));
        s.extend_from_slice(b" \"$target\"/");
        s.extend_from_slice(&sh_quote(&dest_rel));
        s.push(b'\n');
        self.w.write_all(&s)?;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let f = self
            .w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("write {}: {}", self.file.display(), e.error()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        drop(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::sh_quote;

    #[test]
    fn quoting_wraps_and_escapes_single_quotes() {
        assert_eq!(sh_quote(b"it's"), b"'it'\\''s'".to_vec());
        assert_eq!(sh_quote(b"-a b\nc"), b"'-a b\nc'".to_vec());
    }
}
