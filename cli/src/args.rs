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
    after_help = "With --each, one job per argument, like GNU parallel:\n  \
        mrun --each gzip a.txt b.txt            jobs: gzip a.txt, gzip b.txt\n  \
        mrun --each gzip -9 ::: a.txt b.txt     jobs: gzip -9 a.txt, gzip -9 b.txt\n  \
        find . -name '*.log' | mrun --each gzip  one job per line of stdin\n\
        Each job's output is shown in one piece when it ends. Exit status of --each: 0 when \
        every job succeeded, else the number of failed jobs (at most 101); 128+N when \
        stopped by signal N.",
    trailing_var_arg = true
)]
pub struct MrunCli {
    /// Keep this job at home: the balancer never moves it (mrunctl migrate still can).
    /// With --each, every job stays home.
    #[arg(long)]
    pub home: bool,
    /// Run COMMAND once per argument, up to --jobs at once: `mrun --each COMMAND ARG...` runs
    /// `COMMAND ARG` for each ARG; `mrun --each COMMAND FIXED... ::: ARG...` runs
    /// `COMMAND FIXED... ARG`; with no ARG, one argument per line of stdin.
    #[arg(long)]
    pub each: bool,
    /// With --each: how many jobs run at once (default: the CPUs of this machine and of every
    /// reachable configured node together).
    #[arg(short = 'j', long = "jobs", value_name = "N", requires = "each", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// With --each: write GNU parallel's job log to FILE (one tab-separated line per job).
    #[arg(long, value_name = "FILE", requires = "each", value_hint = clap::ValueHint::FilePath)]
    pub joblog: Option<std::path::PathBuf>,
    /// Pass descriptor FD, inherited by mrun, on to the job (repeatable, or `3,4`; `all` for
    /// every one). By default a job gets only stdin, stdout and stderr, as with sudo. A job
    /// holding a kept pipe, socket or terminal that a process outside it shares cannot move.
    #[arg(long = "keep-fd", value_name = "FD", value_delimiter = ',', value_parser = crate::fds::parse_keep_fd)]
    pub keep_fd: Vec<crate::fds::KeepFd>,
    /// The nodes this job may move to (comma separated), instead of MRUN_NODES or the `nodes`
    /// of ~/.config/mrun/config.toml. With --each, for every job.
    #[arg(long, value_name = "NODES")]
    pub nodes: Option<String>,
    /// The command and its arguments (everything from the first non-option word on).
    #[arg(required = true, allow_hyphen_values = true, value_name = "COMMAND", value_hint = clap::ValueHint::CommandWithArguments)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Parser)]
#[command(
    name = "mrunctl",
    version,
    about = "Control mrun: checkpoint, restore and migrate processes"
)]
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
    /// The home daemon: whether it runs, and stopping it.
    Daemon(ctl::daemon::DaemonArgs),
}

/// The completion script of `bin` (`mrun` or `mrunctl`) for `shell`.
pub fn completion(bin: &str, shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut cmd = if bin == "mrun" {
        MrunCli::command()
    } else {
        MrunctlCli::command()
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, bin, &mut out);
    out
}
