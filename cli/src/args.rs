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
        mrun --each gzip -9 a.txt b.txt         jobs: gzip -9 a.txt, gzip -9 b.txt\n  \
        ls *.txt | mrun --each gzip -9          one job per line of stdin, each with -9\n  \
        mrun --each sort -o out ::: a b         jobs: sort -o out a, sort -o out b\n\
        Words starting with - right after the command (up to --) go to every job, further \
        words make one job each, none: the lines of stdin. ::: splits exactly: words before \
        it go to every job, each word after it makes one job; :::: FILE: each line of FILE \
        (- for stdin). A split that would be a guess \
        (an option that may take the next word as its value, or an option among the \
        arguments) is refused with both commands shown with :::.\n\
        Each job's output is shown in one piece when it ends (with -k, in the order of the \
        arguments). Exit status of --each: 0 when \
        every job succeeded, else the number of failed jobs (at most 101); 128+N when \
        stopped by signal N; 2 for a refused command line.\n\
        Options come before COMMAND: the first word that is not an option starts it, and \
        every word after it is the command's (`mrun ls -l`); `--` ends the options \
        (`mrun -- -name`). Exit status: the job's (128+N, or death by the same signal, when \
        signal N ended it); 2 usage error; 127 command not found, 126 not runnable; 255 the \
        job's node was lost.",
    trailing_var_arg = true
)]
pub struct MrunCli {
    /// Keep this job at home: the balancer never moves it (mrunctl migrate still can).
    /// With --each, every job stays home.
    #[arg(long)]
    pub home: bool,
    /// Run COMMAND once per argument, up to --jobs at once: `mrun --each COMMAND [-OPTION...]
    /// ARG...` runs `COMMAND -OPTION... ARG` for each ARG; `mrun --each COMMAND FIXED... :::
    /// ARG...` runs `COMMAND FIXED... ARG`; with no ARG, or `:::: -`, one argument per line of
    /// stdin (`:::: FILE`: of FILE).
    #[arg(long)]
    pub each: bool,
    /// With --each: how many jobs run at once (default: the CPUs of this machine and of every
    /// reachable configured node together).
    #[arg(short = 'j', long = "jobs", value_name = "N", requires = "each", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,
    /// With --each: write GNU parallel's job log to FILE (one tab-separated line per job).
    #[arg(long, value_name = "FILE", requires = "each", value_hint = clap::ValueHint::FilePath)]
    pub joblog: Option<std::path::PathBuf>,
    /// With --each: show the jobs' outputs in the order of their arguments, as GNU parallel's
    /// --keep-order (jobs still run at once; an output waits until every earlier one is shown).
    #[arg(short = 'k', long = "keep-order", requires = "each")]
    pub keep_order: bool,
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
    #[arg(required = true, value_name = "COMMAND", value_hint = clap::ValueHint::CommandWithArguments)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Parser)]
#[command(
    name = "mrunctl",
    version,
    about = "Control mrun: checkpoint, restore and migrate processes",
    after_help = crate::exit::CODES_HELP
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
    /// Send a signal (default TERM) to jobs wherever they run, as kill(1) does.
    Kill(ctl::kill::KillArgs),
    /// The home daemon: whether it runs, and stopping it.
    Daemon(ctl::daemon::DaemonArgs),
}

/// The completion script of `bin` (`mrun` or `mrunctl`) for `shell`.
pub fn completion(bin: &str, shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let cmd = if bin == "mrun" {
        MrunCli::command()
    } else {
        MrunctlCli::command()
    };
    crate::completion::script(cmd, bin, shell)
}
