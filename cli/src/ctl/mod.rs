//! `mrunctl` subcommands, one module each.

pub mod checkpoint;
pub mod migrate;
pub mod restore;
pub mod status;
