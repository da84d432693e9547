//! The command lines of `mrun` and `mrunctl` (clap definitions), shared by the binaries and by
//! the shell completions in `completions/`, which a test keeps current.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::ctl;

#[derive(Debug, Parser)]
#[command(
    name = "mrun",
    version,
    about = "Run a command that can migrate to other machines while it runs",
    trailing_var_arg = true
)]
pub struct MrunCli {
    /// Keep this job at home: the balancer never moves it (mrunctl migrate still can).
    #[arg(long)]
    pub home: bool,
    /// The command and its arguments (everything from the first non-option word on).
    #[arg(required = true, allow_hyphen_values = true, value_name = "COMMAND", value_hint = clap::ValueHint::CommandWithArguments)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Parser)]
#[command(name = "mrunctl", version, about = "Control mrun: checkpoint, restore and migrate processes")]
pub struct MrunctlCli {
    #[command(subcommand)]
    pub command: MrunctlCommand,
}

#[derive(Debug, Subcommand)]
pub enum MrunctlCommand {
    /// Freeze a process, write its image, then end it (it lives on in the image).
    Checkpoint(ctl::checkpoint::CheckpointArgs),
    /// Bring an image back to life in the foreground, with this command's stdio.
    Restore(ctl::restore::RestoreArgs),
    /// Move a running job to a node, or back home.
    Migrate(ctl::migrate::MigrateArgs),
    /// List this user's jobs (where each runs, its age and CPU time) and the nodes.
    Status(ctl::status::StatusArgs),
    /// The configured nodes and what each reports (CPUs, load, free memory).
    Nodes(ctl::nodes::NodesArgs),
}

/// The completion script of `bin` (`mrun` or `mrunctl`) for `shell`.
pub fn completion(bin: &str, shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut cmd = if bin == "mrun" { MrunCli::command() } else { MrunctlCli::command() };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}
