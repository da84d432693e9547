//! The home daemon: one per user per machine, on a Unix socket private to its user. It keeps
//! one SSH connection per node (reconnecting with backoff) and gives each deputy a fresh
//! channel to the node's agent on it, so a migration does not pay for a new SSH handshake.
//! Started automatically by the first `mrun` that needs a node.

mod client;
mod server;

pub use client::open_agent;
pub use server::run;
