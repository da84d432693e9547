//! `mrunctl` subcommands, one module each.

pub mod checkpoint;
pub mod daemon;
pub mod migrate;
pub mod nodes;
pub mod restore;
pub mod status;
pub mod watch;
