//! One kind of process state per module, each with its capture (from a frozen process) and its
//! apply (into the fresh process being restored).

pub mod attrs;
pub mod events;
pub mod fds;
pub mod fifo;
pub mod listeners;
pub mod made_files;
pub mod madvise;
pub mod mem;
pub mod signals;
pub mod sockets;
pub mod task;
pub mod thread;
pub mod timers;
pub mod unlinked;

use std::os::unix::fs::MetadataExt;

use crate::image::model::FileIdentity;

/// The device of home's files served to this process's job (see `crate::files`), or
/// `u64::MAX`: its files' device numbers are FUSE's, not home's.
static SERVED_DEVICE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Files on device `dev` are home's files served to the job: their device number means
/// nothing (their inode numbers, sizes and times are home's).
pub fn files_served_on(dev: u64) {
    SERVED_DEVICE.store(dev, std::sync::atomic::Ordering::Relaxed);
}

/// `path` as process `pid` sees it, from here: through its root (`/proc/PID/root`), which is
/// not ours when it was given home's files (see `crate::files::mount`).
pub(crate) fn seen_by(pid: crate::sys::Pid, path: &std::path::Path) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    p.push(path.strip_prefix("/").unwrap_or(path));
    p
}

/// The identity of a file: device 0 when it is one of home's files served here (unknown).
pub(crate) fn identity_of(meta: &std::fs::Metadata) -> FileIdentity {
    let served = meta.dev() == SERVED_DEVICE.load(std::sync::atomic::Ordering::Relaxed);
    FileIdentity {
        dev: if served { 0 } else { meta.dev() },
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    }
}

/// Whether the file `meta` found at restore is the one the image recorded. On the machine
/// that took the image (same boot) it must be the same inode; elsewhere (nodes share the
/// filesystem by path) device and inode numbers mean nothing, so size and modification time
/// decide. `content` asks for unchanged bytes too (size and mtime): for files the process
/// reads or maps; a file it writes may have grown meanwhile.
pub(crate) fn same_file(
    recorded: &FileIdentity,
    meta: &std::fs::Metadata,
    same_machine: bool,
    content: bool,
) -> bool {
    let now = identity_of(meta);
    // Device 0: one side saw it served from home (see `files_served_on`); the inode decides.
    let same_dev = now.dev == recorded.dev || now.dev == 0 || recorded.dev == 0;
    let same_inode = !same_machine || (same_dev && now.ino == recorded.ino);
    same_inode && (!content || (now.size == recorded.size && now.mtime_ns == recorded.mtime_ns))
}

/// This boot of this machine (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_identity_rules() {
        let meta = std::fs::metadata("/proc/self/exe").expect("stat our own binary");
        let mut recorded = identity_of(&meta);
        assert!(same_file(&recorded, &meta, true, true));
        recorded.ino ^= 1;
        assert!(
            !same_file(&recorded, &meta, true, false),
            "same machine: another inode is another file"
        );
        assert!(
            same_file(&recorded, &meta, false, true),
            "another machine: inode numbers mean nothing"
        );
        recorded.size += 1;
        assert!(!same_file(&recorded, &meta, false, true), "content changed");
        assert!(
            same_file(&recorded, &meta, false, false),
            "a written file may have grown"
        );
    }
}
