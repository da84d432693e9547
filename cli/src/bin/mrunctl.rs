//! `mrunctl`: the control tool of mrun.

use clap::Parser;
use mrun::args::{MrunctlCli, MrunctlCommand};
use mrun::ctl;

fn main() {
    match MrunctlCli::parse().command {
        MrunctlCommand::Checkpoint(a) => ctl::checkpoint::run(a),
        MrunctlCommand::Restore(a) => ctl::restore::run(a),
        MrunctlCommand::Migrate(a) => ctl::migrate::run(a),
        MrunctlCommand::Status(a) => ctl::status::run(a),
        MrunctlCommand::Nodes(a) => ctl::nodes::run(a),
        MrunctlCommand::Daemon(a) => ctl::daemon::run(a),
    }
}
