//! The home daemon: one per user per machine, on a Unix socket private to its user. It keeps
//! one SSH connection per node (reconnecting with backoff) and gives each deputy a fresh
//! channel to the node's agent on it, so a migration does not pay for a new SSH handshake.
//! Started automatically by the first `mrun` that needs a node, or whose job is old enough to
//! be worth balancing, and by `mrunctl status`/`nodes`; detached from its starter; stopped by
//! `mrunctl daemon stop` or after two idle minutes. It also measures home, watches each node's
//! load (the nodes each request names, see `cluster`), and runs the balancer.

mod balance;
mod client;
pub mod cluster;
mod connections;
mod detach;
pub mod protocol;
mod server;

pub use client::{cluster_report, daemon_status, ensure_running, open_agent, stop};
pub use server::run;
