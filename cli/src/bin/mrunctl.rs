//! `mrunctl`: the control tool of mrun.

use clap::{Parser, Subcommand};
use mrun::ctl;

#[derive(Debug, Parser)]
#[command(name = "mrunctl", version, about = "Control mrun: checkpoint, restore and (soon) migrate processes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Freeze a process, write its image, then end it (it lives on in the image).
    Checkpoint(ctl::checkpoint::CheckpointArgs),
    /// Bring an image back to life in the foreground, with this command's stdio.
    Restore(ctl::restore::RestoreArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Checkpoint(a) => ctl::checkpoint::run(a),
        Command::Restore(a) => ctl::restore::run(a),
    }
}
