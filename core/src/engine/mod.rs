//! The checkpoint/restore engine: freeze a process, capture it into an image, and bring an
//! image back to life in a fresh process. Single-threaded x86_64 processes only, for now.

mod checks;
mod compat;
mod dump;
pub(crate) mod error;
mod freeze;
pub(crate) mod inject;
mod restore;
mod spawn;

pub use compat::{check as check_compat, local as local_compat};
pub use dump::{checkpoint, dump, Checkpointed, DumpOptions, DumpStats};
pub use error::EngineError;
pub use restore::{restore, RestoreOptions, Restored};
