//! The home daemon: one per user per machine, on a Unix socket private to its user. It keeps
//! one SSH connection per node (reconnecting with backoff) and gives each deputy a fresh
//! channel to the node's agent on it, so a migration does not pay for a new SSH handshake.
//! Started automatically by the first `mrun` that needs a node, or whose job is old enough to
//! be worth balancing. It also measures home, watches each node's load, and runs the balancer.

mod balance;
mod client;
pub mod cluster;
mod server;

pub use client::{cluster_report, ensure_running, open_agent};
pub use server::run;
