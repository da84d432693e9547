//! `mrunctl` subcommands, one module each.

pub mod checkpoint;
pub mod restore;
