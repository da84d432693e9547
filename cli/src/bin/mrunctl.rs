//! `mrunctl`: the control tool of mrun.

use clap::{Parser, Subcommand};
use mrun::ctl;

#[derive(Debug, Parser)]
#[command(name = "mrunctl", version, about = "Control mrun: checkpoint, restore and migrate processes")]
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
    /// Move a running job to a node, or back home.
    Migrate(ctl::migrate::MigrateArgs),
    /// List this user's jobs: where each runs, its age and CPU time.
    Status(ctl::status::StatusArgs),
    /// The configured nodes and what each reports (CPUs, load, free memory).
    Nodes(ctl::nodes::NodesArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Checkpoint(a) => ctl::checkpoint::run(a),
        Command::Restore(a) => ctl::restore::run(a),
        Command::Migrate(a) => ctl::migrate::run(a),
        Command::Status(a) => ctl::status::run(a),
        Command::Nodes(a) => ctl::nodes::run(a),
    }
}
