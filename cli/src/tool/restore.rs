//! `backup-tool restore`.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_repo: &backup_core::Repository, _args: &Args) -> anyhow::Result<i32> {
    anyhow::bail!("`restore` is not implemented yet")
}
