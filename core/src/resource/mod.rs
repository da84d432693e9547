//! One kind of process state per module, each with its capture (from a frozen process) and its
//! apply (into the fresh process being restored).

pub mod fds;
pub mod mem;
pub mod signals;
pub mod task;

use std::os::unix::fs::MetadataExt;

use crate::image::model::FileIdentity;

pub(crate) fn identity_of(meta: &std::fs::Metadata) -> FileIdentity {
    FileIdentity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    }
}
