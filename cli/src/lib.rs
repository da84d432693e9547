//! The user interface of mrun: the `mrunctl` control tool (and, later, the `mrun` prefix and
//! the home daemon). Binaries in `src/bin` are thin; each subcommand lives in its own module.

#![forbid(unsafe_code)]

pub mod args;
pub mod completion;
pub mod ctl;
pub mod daemon;
pub mod each;
pub mod exit;
pub mod fds;
pub mod jobs;
pub mod log;
pub mod nodes;
pub mod print;
pub mod run;
