//! `backup-tool show`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_repo: &backup_core::Repository, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("`show` is not implemented yet")
}
