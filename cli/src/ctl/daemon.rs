//! `mrunctl daemon status|stop`: whether this user's home daemon (for this HOME and this build
//! of mrun) runs, and stopping it. Neither starts one.

use clap::{Args, Subcommand};

use crate::exit;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(subcommand)]
    pub action: DaemonAction,
}

#[derive(Debug, Subcommand)]
pub enum DaemonAction {
    /// Whether it runs: pid, uptime, memory, nodes watched, job connections carried.
    /// Exit status 0 if it runs, 1 if not.
    Status,
    /// Stop it (refused while a job running on a node is connected through it). The next
    /// command that needs it starts it again, with the environment of that command.
    Stop,
}

pub fn run(args: DaemonArgs) -> ! {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| exit::fail("mrunctl", format!("cannot start: {e}"), exit::FAILURE));
    match args.action {
        DaemonAction::Status => match runtime.block_on(crate::daemon::daemon_status()) {
            Ok(Some(s)) => {
                crate::outln!(
                    "mrun daemon: running, pid {}, up {:.0} s, {:.1} MiB resident, \
                     {} node(s) watched ({} reporting), {} job connection(s) carried\n\
                     socket: {}",
                    s.pid,
                    s.uptime_secs,
                    s.rss_bytes as f64 / f64::from(1u32 << 20),
                    s.nodes_watched,
                    s.nodes_up,
                    s.carried,
                    s.socket
                );
                std::process::exit(0)
            }
            Ok(None) => {
                crate::outln!("mrun daemon: not running");
                std::process::exit(exit::FAILURE)
            }
            Err(e) => exit::fail(
                "mrunctl",
                format!("cannot ask the mrun daemon: {e:#}"),
                exit::FAILURE,
            ),
        },
        DaemonAction::Stop => match runtime.block_on(crate::daemon::stop()) {
            Ok(Some(pid)) => {
                crate::outln!("mrun daemon (pid {pid}) stopped");
                std::process::exit(0)
            }
            Ok(None) => {
                crate::outln!("mrun daemon: not running");
                std::process::exit(0)
            }
            Err(e) => exit::fail(
                "mrunctl",
                format!("cannot stop the mrun daemon: {e:#}"),
                exit::FAILURE,
            ),
        },
    }
}
