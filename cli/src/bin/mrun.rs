//! `mrun COMMAND [ARGS]...`: run COMMAND as a job that can move between machines.

use std::ffi::OsString;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "mrun",
    version,
    about = "Run a command that can migrate to other machines while it runs",
    trailing_var_arg = true
)]
struct Cli {
    /// The command and its arguments (everything from the first non-option word on).
    #[arg(required = true, allow_hyphen_values = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() {
    // Hidden roles, as options so that no command name is taken: the single-threaded helper
    // that restores a returning job at home, and the home daemon.
    match std::env::args_os().nth(1).as_deref().and_then(|a| a.to_str()) {
        Some("--restore-helper") => mrun_core::supervise::restore_helper(3, 4, false),
        Some("--daemon") => mrun::daemon::run(),
        _ => {}
    }
    let cli = Cli::parse();
    mrun::run::deputy::run(cli.command)
}
