//! `mrunctl` subcommands, one module each.

pub mod checkpoint;
pub mod complete;
pub mod daemon;
pub mod json;
pub mod kill;
pub mod migrate;
pub mod nodes;
pub mod restore;
pub mod status;
pub mod watch;
