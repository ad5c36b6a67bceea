//! `backup-tool prune`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_repo: &backup_core::Repository, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("`prune` is not implemented yet")
}
