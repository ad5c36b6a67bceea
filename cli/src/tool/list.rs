//! `backup-tool list`: increments with time, counts and sizes, and the mirror.

use std::io::Write;

use backup_core::explore::catalog;

use super::out;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    backup-tool /media/usb/backup list\n  \
    backup-tool -c usb.json list --detailed      also what pruning each increment would free")]
pub struct Args {
    /// Also show the bytes each increment alone holds (what pruning it would free; reads
    /// the link count of every stored file).
    #[arg(long)]
    pub detailed: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(repo: &backup_core::Repository, args: &Args) -> anyhow::Result<i32> {
    let (backup, mut o) = super::open(repo, None, args.json)?;
    let listing = catalog::list(&backup, args.detailed)?;
    if args.json {
        o.json(&listing)?;
        return Ok(0);
    }
    let head = format!(
        "{:<28} {:<19} {:>7} {:>6} {:>7} {:>7} {:>11}{}",
        "INCREMENT",
        "TIME",
        "FILES",
        "NEW",
        "CHANGED",
        "DELETED",
        "SIZE",
        if args.detailed { "   EXCLUSIVE" } else { "" }
    );
    writeln!(o.w, "{}", o.paint("1", &head))?;
    for r in &listing.all {
        let r = match r {
            Ok(r) => r,
            Err(u) => {
                let line = format!(
                    "{:<28} no readable metadata ({}): run `check`, then `recreate --backup {}`",
                    u.name, u.reason, u.name
                );
                writeln!(o.w, "{}", o.paint("33", &out::show(&line)))?;
                continue;
            }
        };
        let time = chrono::DateTime::parse_from_rfc3339(&r.time)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|_| r.time.clone());
        write!(
            o.w,
            "{:<28} {:<19} {:>7} {:>6} {:>7} {:>7} {:>11}",
            r.name,
            time,
            r.files,
            r.new,
            r.changed,
            r.deleted,
            out::size(r.bytes)
        )?;
        if let Some(x) = r.exclusive_bytes {
            write!(o.w, " {:>11}", out::size(x))?;
        }
        writeln!(o.w)?;
    }
    let m = &listing.mirror;
    writeln!(
        o.w,
        "{} {} ({} tracked), {}{}",
        o.paint("1", "mirror:"),
        crate::term::plural(m.files, "file", "files"),
        m.tracked,
        out::size(m.bytes),
        m.updated
            .as_deref()
            .map(|u| format!(", updated {u}"))
            .unwrap_or_default()
    )?;
    writeln!(
        o.w,
        "{}{}",
        crate::term::plural(listing.increments.len(), "increment", "increments"),
        match listing.unreadable.len() {
            0 => String::new(),
            n => format!(", {n} without readable metadata"),
        }
    )?;
    o.w.flush()?;
    Ok(0)
}
