//! `backup-tool log PATH`: every stored version of one file, and its deletions.

use std::io::Write;

use backup_core::explore::parse_user_path;
use backup_core::Holder;
use serde::Serialize;

use super::out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup log projects/thesis/main.tex\n  \
    backup-tool -c usb.json log ~/Documents/projects/thesis/main.tex   absolute, inside the profile's src")]
pub struct Args {
    /// The file, relative to the source root (`projects/a.txt`), or absolute inside the
    /// profile's src when the backup is named through its profile.
    pub path: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct EventJson {
    /// The increment that recorded it (empty when unknown).
    increment: Option<backup_core::IncrementName>,
    /// `stored` (a version) or `deleted`.
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    /// Where the version's bytes are now (`mirror` or `<increment>/<track|deleted>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    held_by: Option<String>,
}

#[derive(Serialize)]
struct MirrorJson {
    size: u64,
    mtime_ns: i64,
    tracked: bool,
}

#[derive(Serialize)]
struct LogJson {
    path: backup_core::RelPath,
    events: Vec<EventJson>,
    mirror: Option<MirrorJson>,
}

pub fn run(
    repo: &backup_core::Repository,
    profile: Option<&backup_core::config::Config>,
    args: &Args,
) -> anyhow::Result<i32> {
    let path = parse_user_path(&super::source_relative(&args.path, profile)?)?;
    let (backup, mut o) = super::open(repo, None, args.json)?;
    // One path's folded history (kept versions included): all the memory this takes.
    let events: Vec<EventJson> = backup
        .index()
        .timeline(&path)?
        .into_iter()
        .map(|f| match f.version {
            Some(v) => EventJson {
                increment: f.at,
                event: "stored",
                size: Some(v.size),
                mtime_ns: Some(v.mtime.ns),
                hash: v.hash.map(|h| h.to_hex()),
                held_by: Some(match &v.holder {
                    Holder::Mirror => "mirror".to_owned(),
                    Holder::Increment { name, category } => {
                        format!("{name}/{}", category.dir_name())
                    }
                }),
            },
            None => EventJson {
                increment: f.at,
                event: "deleted",
                size: None,
                mtime_ns: None,
                hash: None,
                held_by: None,
            },
        })
        .collect();
    let mirror = backup
        .index()
        .mirror_get(&path)?
        .filter(|e| e.kind != backup_core::FileKind::Dir)
        .map(|e| MirrorJson {
            size: e.size,
            mtime_ns: e.mtime.ns,
            tracked: e.tracked,
        });
    let unreadable: Vec<backup_core::IncrementName> = backup
        .increments()?
        .into_iter()
        .filter(|i| i.state != backup_core::index::IncrementState::Ok)
        .map(|i| i.name)
        .collect();
    super::warn_unreadable(&unreadable, "versions it recorded are not listed");
    if events.is_empty() && mirror.is_none() {
        let msg = format!("{} was never backed up", out::rel(&path));
        eprintln!("backup-tool: {msg}");
        if args.json {
            println!("{}", crate::json_error(&msg, crate::exit::PARTIAL));
        }
        return Ok(crate::exit::PARTIAL);
    }
    if args.json {
        o.json(&LogJson {
            path,
            events,
            mirror,
        })?;
        return Ok(0);
    }
    writeln!(o.w, "{}", o.paint("1", &out::rel(&path)))?;
    for e in &events {
        let when = match &e.increment {
            Some(n) => n.as_str(),
            None => "(unknown increment)",
        };
        match e.event {
            "stored" => writeln!(
                o.w,
                "  {:<28} {}  {:>10}  {}  held by {}",
                when,
                o.status("tracked"),
                out::size(e.size.unwrap_or(0)),
                out::date_ns(e.mtime_ns.unwrap_or(0)),
                e.held_by.as_deref().unwrap_or("?")
            )?,
            _ => writeln!(o.w, "  {:<28} {}", when, o.status("deleted"))?,
        }
    }
    if let Some(m) = &mirror {
        writeln!(
            o.w,
            "  {:<28} {}  {:>10}  {}{}",
            "mirror (now)",
            o.status("mirror"),
            out::size(m.size),
            out::date_ns(m.mtime_ns),
            if m.tracked {
                ""
            } else {
                "  untracked: no history is kept"
            }
        )?;
    }
    o.w.flush()?;
    Ok(0)
}
