//! Files with no name left that a process holds open: a deleted file (`tmpfile(3)`, Python's
//! `tempfile.TemporaryFile()`) or a memfd. Nothing can open them again by path, so their
//! contents travel in the image (up to a limit), with their size, mode and, for a memfd, its
//! seals. The restore makes a new unnamed file with the same contents: a deleted file is made
//! again in its directory under its name when it can be (and unlinked at once), else as an
//! unnamed temporary file there, else as a memfd; a memfd as a memfd of the same name.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crate::engine::error::{Context, EngineError, Result};
use crate::image::model::FdKind;
use crate::sys::Pid;

/// The most bytes one unnamed file may hold to travel (its contents ride in the image's state).
pub const MAX_BYTES: u64 = 8 << 20;
/// The most bytes all of a job's unnamed files may hold together.
pub const MAX_TOTAL: u64 = 32 << 20;

const DELETED: &str = " (deleted)";
const MEMFD: &str = "/memfd:";

/// Whether a descriptor link target names a file with no name left.
pub fn is_unlinked(target: &str) -> bool {
    target.ends_with(DELETED) || target.starts_with(MEMFD)
}

/// The unnamed files of a job being captured, by device and inode: each one's contents travel
/// once, with its first open file.
#[derive(Default)]
pub struct Seen {
    files: HashMap<(u64, u64), ()>,
    total: u64,
}

/// Open file `fd` of `pid`, a deleted file or memfd (`target` as its link reads), with status
/// `flags` and `offset`; `Err(what)` says in a few words why it cannot travel.
pub fn capture(
    pid: Pid,
    fd: i32,
    target: &str,
    flags: i32,
    offset: u64,
    seen: &mut Seen,
) -> Result<std::result::Result<FdKind, String>> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let meta = std::fs::metadata(&path).ctx(|| format!("stat of {path}"))?;
    let memfd = target.starts_with(MEMFD);
    let what = if memfd { "a memfd" } else { "a deleted file" };
    if !meta.is_file() {
        return Ok(Err(format!("{what} that is not a regular file ({target})")));
    }
    let key = (meta.dev(), meta.ino());
    let first = seen.files.insert(key, ()).is_none();
    let contents = if first {
        if meta.size() > MAX_BYTES || seen.total + meta.size() > MAX_TOTAL {
            return Ok(Err(format!(
                "{what} of {} bytes ({target}); mrun carries files with no name up to {} MiB \
                 each, {} MiB in all",
                meta.size(),
                MAX_BYTES >> 20,
                MAX_TOTAL >> 20
            )));
        }
        seen.total += meta.size();
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("{what} that cannot be read ({target}: {e})"))),
        };
        let mut bytes = Vec::with_capacity(meta.size() as usize);
        f.read_to_end(&mut bytes)
            .ctx(|| format!("reading the contents of {target} (fd {fd} of pid {pid})"))?;
        bytes
    } else {
        Vec::new()
    };
    let seals = if memfd {
        let copy = crate::sys::pidfd::get_fd(pid, fd)
            .ctx(|| format!("copying fd {fd} of pid {pid} (a memfd)"))?;
        crate::sys::memfd::seals(copy.as_fd()).ctx(|| format!("F_GET_SEALS of {target}"))?
    } else {
        0
    };
    let name = target
        .strip_prefix(MEMFD)
        .unwrap_or(target)
        .strip_suffix(DELETED)
        .unwrap_or(target.strip_prefix(MEMFD).unwrap_or(target))
        .to_string();
    Ok(Ok(FdKind::Unlinked {
        dev: key.0,
        ino: key.1,
        memfd,
        name,
        flags,
        offset,
        mode: meta.mode() & 0o7777,
        size: meta.size(),
        seals,
        contents,
    }))
}

/// The unnamed files of a restore, by the device and inode they had: each made once.
#[derive(Default)]
pub struct Made(HashMap<(u64, u64), OwnedFd>);

/// The open file for `kind` (an [`FdKind::Unlinked`]): the file made (with its contents) the
/// first time its inode comes up, opened again (an open file of its own) the next times; at
/// its offset, with its access mode and status flags.
pub fn open(kind: &FdKind, made: &mut Made) -> Result<OwnedFd> {
    let FdKind::Unlinked {
        dev,
        ino,
        memfd,
        name,
        flags,
        offset,
        mode,
        size,
        seals,
        contents,
    } = kind
    else {
        return Err(EngineError::Unrestorable(
            "an open file of another kind where a file with no name was expected".into(),
        ));
    };
    let file = match made.0.entry((*dev, *ino)) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(make(*memfd, name, *mode, *size, *seals, contents)?)
        }
    };
    // An open file of its own, with the access mode it had (the one made is read-write).
    let access = flags & libc::O_ACCMODE;
    let status = flags & (libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_DIRECT);
    let again = std::fs::OpenOptions::new()
        .read(access == libc::O_RDONLY || access == libc::O_RDWR)
        .write(access == libc::O_WRONLY || access == libc::O_RDWR)
        .custom_flags(status | libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ctx(|| format!("opening {name} again"))?;
    let fd = OwnedFd::from(again);
    nix::unistd::lseek(&fd, *offset as i64, nix::unistd::Whence::SeekSet)
        .ctx(|| format!("seeking {name}"))?;
    Ok(fd)
}

/// The file, made with its contents, size, mode and seals.
fn make(
    memfd: bool,
    name: &str,
    mode: u32,
    size: u64,
    seals: u32,
    contents: &[u8],
) -> Result<OwnedFd> {
    let file = if memfd {
        crate::sys::memfd::create(name, seals).ctx(|| format!("creating memfd {name}"))?
    } else {
        make_deleted(name, mode)?
    };
    let mut writer = std::fs::File::from(
        file.try_clone()
            .ctx(|| format!("duplicating the descriptor of {name}"))?,
    );
    writer
        .write_all(contents)
        .ctx(|| format!("writing the contents of {name}"))?;
    nix::unistd::ftruncate(&file, size as i64).ctx(|| format!("sizing {name}"))?;
    nix::sys::stat::fchmod(&file, nix::sys::stat::Mode::from_bits_truncate(mode))
        .ctx(|| format!("chmod of {name}"))?;
    if memfd && seals != 0 {
        crate::sys::memfd::add_seals(file.as_fd(), seals)
            .ctx(|| format!("sealing memfd {name}"))?;
    }
    Ok(file)
}

/// A new file with no name in the directory of `name` (`/dir/file (deleted)` as its link
/// read): under its old name, unlinked at once, when the name is free; else a temporary file
/// of the directory; else, where the directory is gone or not writable, a memfd.
fn make_deleted(name: &str, mode: u32) -> Result<OwnedFd> {
    let path = std::path::Path::new(name);
    let rw = |o: &mut std::fs::OpenOptions| {
        o.read(true).write(true);
    };
    let mut named = std::fs::OpenOptions::new();
    rw(&mut named);
    named
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    if let Ok(f) = named.open(path) {
        if std::fs::remove_file(path).is_ok() {
            return Ok(f.into());
        }
    }
    if let Some(dir) = path.parent().filter(|d| d.is_dir()) {
        let mut tmp = std::fs::OpenOptions::new();
        rw(&mut tmp);
        tmp.mode(mode & 0o777)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC);
        if let Ok(f) = tmp.open(dir) {
            return Ok(f.into());
        }
    }
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::sys::memfd::create(&base, 0).ctx(|| format!("creating a memfd for {name}"))
}
