//! `backup`: mirror the selected source files and keep hard-linked increments of tracked ones.

fn main() {
    eprintln!("backup: the pipeline is not implemented yet");
    std::process::exit(backup_cli::exit::REFUSED);
}
