//! The checkpoint/restore engine: freeze a process (every thread of it), capture it into an
//! image, and bring an image back to life in a fresh process with the same pid and thread ids.
//! x86_64 processes without children, for now.

mod checks;
mod compat;
pub mod dirty;
mod dump;
pub(crate) mod error;
mod freeze;
pub(crate) mod inject;
pub mod precopy;
mod predict;
mod refusal;
mod restore;
mod spawn;
mod tree;

pub use compat::{check as check_compat, local as local_compat};
pub use dump::{checkpoint, dump, dump_precopied, Checkpointed, DumpOptions, DumpStats};
pub use error::EngineError;
pub use predict::refusal as predict_refusal;
pub use refusal::Refusal;
pub use restore::{restore, restore_reporting, RestoreOptions, Restored, READ_BUFFER};

/// Exit code of a restore helper started without its descriptors.
pub const HELPER_USAGE: i32 = 64;

/// An error and its causes on one line: "what: because: because".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = c.source();
    }
    text
}
