//! Named pipes (FIFOs) the job holds both ends of: reopened by path (after checking it is the
//! same FIFO), with what waited in them. The restorer holds each FIFO open for reading and
//! writing while it refills it and opens the ends the processes had, so no open blocks and
//! the buffered bytes are not lost before a process holds an end.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use crate::engine::error::{Context, EngineError, Result};
use crate::image::model::FdKind;
use crate::sys::Pid;

/// The key under which the job's ends of a FIFO are noted (see `fds::Held`).
pub fn key(meta: &std::fs::Metadata) -> String {
    format!("fifo:{}:{}", meta.dev(), meta.ino())
}

/// Open file `fd` of `pid`, an end of FIFO `path` (`meta` its stat) whose both ends the job
/// holds. The first read end seen carries the bytes waiting in it (`seen` the FIFOs done).
pub fn capture(
    pid: Pid,
    fd: i32,
    path: &str,
    flags: i32,
    meta: &std::fs::Metadata,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<FdKind> {
    let reads = flags & libc::O_ACCMODE != libc::O_WRONLY;
    let copy = crate::sys::pidfd::get_fd(pid, fd)
        .ctx(|| format!("copying fd {fd} of pid {pid} (a named pipe)"))?;
    let end = std::fs::File::from(copy);
    let size = crate::sys::pipe::capacity(&end).ctx(|| format!("F_GETPIPE_SZ of {path}"))?;
    let data = if reads && seen.insert((meta.dev(), meta.ino())) {
        crate::sys::pipe::peek_all(&end).ctx(|| format!("copying the contents of {path}"))?
    } else {
        Vec::new()
    };
    Ok(FdKind::Fifo {
        path: path.to_string(),
        flags,
        identity: super::identity_of(meta),
        size,
        data,
    })
}

/// The FIFOs of a restore, each held open for reading and writing by the restorer (by path).
#[derive(Default)]
pub struct Held(HashMap<String, OwnedFd>);

impl Held {
    /// The descriptors to keep until every process holds its ends.
    pub fn into_fds(self) -> impl Iterator<Item = OwnedFd> {
        self.0.into_values()
    }
}

/// The open file for `kind` (an [`FdKind::Fifo`]): the FIFO at its path, checked to be the one
/// of the image, refilled the first time, opened with the access mode and status flags it had.
pub fn open(kind: &FdKind, same_machine: bool, held: &mut Held) -> Result<OwnedFd> {
    let FdKind::Fifo {
        path,
        flags,
        identity,
        size,
        data,
    } = kind
    else {
        return Err(EngineError::Unrestorable(
            "an open file of another kind where a named pipe was expected".into(),
        ));
    };
    let nonblock = |o: &mut std::fs::OpenOptions| {
        o.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC);
    };
    if !held.0.contains_key(path) {
        let mut both = std::fs::OpenOptions::new();
        both.read(true).write(true);
        nonblock(&mut both);
        let f = both
            .open(path)
            .map_err(|e| EngineError::Unrestorable(format!("cannot open {path}: {e}")))?;
        let meta = f.metadata().ctx(|| format!("stat of {path}"))?;
        if !meta.file_type().is_fifo() || !super::same_file(identity, &meta, same_machine, false) {
            return Err(EngineError::Unrestorable(format!(
                "{path} is not the named pipe the job had open"
            )));
        }
        held.0.insert(path.clone(), f.into());
    }
    let Some(holder) = held.0.get(path) else {
        return Err(EngineError::Unrestorable(format!("{path} was not opened")));
    };
    if !data.is_empty() {
        let room = crate::sys::pipe::make_room(holder.as_fd(), (*size as usize).max(data.len()))
            .ctx(|| format!("sizing {path}"))?;
        if room < data.len() {
            return Err(EngineError::Unrestorable(format!(
                "the named pipe {path} held {} bytes, more than a pipe here holds for this user",
                data.len()
            )));
        }
        crate::sys::pipe::fill(holder.as_raw_fd(), data).ctx(|| format!("refilling {path}"))?;
    }
    let access = flags & libc::O_ACCMODE;
    let mut end = std::fs::OpenOptions::new();
    end.read(access != libc::O_WRONLY)
        .write(access != libc::O_RDONLY);
    nonblock(&mut end);
    let fd: OwnedFd = end
        .open(path)
        .map_err(|e| EngineError::Unrestorable(format!("cannot open {path}: {e}")))?
        .into();
    crate::sys::pipe::set_status_flags(fd.as_raw_fd(), *flags)
        .ctx(|| format!("setting the flags of {path}"))?;
    Ok(fd)
}
