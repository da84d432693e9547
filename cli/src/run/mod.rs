//! `mrun COMMAND`: start the command at home at once and stay as its deputy for its whole
//! life, wherever it runs: its stdio, signals and exit status behave as if it never moved.

mod control;
pub mod deputy;
mod link;
mod ssh;
mod stdin;
mod terminal;
