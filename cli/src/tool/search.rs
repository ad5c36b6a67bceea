//! `backup-tool search`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_repo: &backup_core::Repository, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("`search` is not implemented yet")
}
