//! `mrunctl`: the control tool of mrun.

use mrun::args::{MrunctlCli, MrunctlCommand};
use mrun::ctl;

fn main() {
    // Hidden role for the shell completions, kept out of the clap definitions (and so out of
    // the completions and --help): `mrunctl complete jobs|nodes`.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "complete") {
        ctl::complete::run(args.get(2).and_then(|a| a.to_str()).unwrap_or(""));
    }
    let words = ctl::kill::dash_signal(args);
    match mrun::print::parse_args::<MrunctlCli>(words).command {
        MrunctlCommand::Checkpoint(a) => ctl::checkpoint::run(a),
        MrunctlCommand::Restore(a) => ctl::restore::run(a),
        MrunctlCommand::Migrate(a) => ctl::migrate::run(a),
        MrunctlCommand::Status(a) => ctl::status::run(a),
        MrunctlCommand::Nodes(a) => ctl::nodes::run(a),
        MrunctlCommand::Kill(a) => ctl::kill::run(a),
        MrunctlCommand::Daemon(a) => ctl::daemon::run(a),
    }
}
