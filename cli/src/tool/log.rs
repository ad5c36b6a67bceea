//! `backup-tool log`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_repo: &backup_core::Repository, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("`log` is not implemented yet")
}
