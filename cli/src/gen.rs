//! Shell completions and man pages, generated from the clap definitions of a binary.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

/// Completions for `shell` on stdout (`source <(backup-tool completions bash)`).
pub fn completions(mut cmd: clap::Command, shell: Shell) -> anyhow::Result<i32> {
    let name = cmd.get_name().to_owned();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out.flush()?;
    Ok(crate::exit::SUCCESS)
}

/// The man page of `cmd` on stdout, or with `dir`, one page per command and subcommand
/// written there (`backup-tool.1`, `backup-tool-list.1`, ...).
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<i32> {
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
        return Ok(crate::exit::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(cmd, dir, &mut written)?;
    for p in &written {
        println!("{}", p.display());
    }
    Ok(crate::exit::SUCCESS)
}

fn write_pages(
    cmd: clap::Command,
    dir: &Path,
    written: &mut Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let cmd = {
        let mut c = cmd;
        c.build();
        c
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        let sub = sub.clone().name(name.clone()).display_name(name);
        write_pages(sub, dir, written)?;
    }
    let path = dir.join(format!("{}.1", cmd.get_name()));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
    written.push(path);
    Ok(())
}
