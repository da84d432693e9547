//! Home's side of served files: carries out a node's requests on home's files, as the user
//! who runs the deputy, on a thread of its own, one request after another (so a node's
//! writes land in the order it made them, and a read after a write sees it).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::wire::files::{Answer, Attr, DirEntry, FileMsg, FileOp, SetAttr, StatFs};
use crate::wire::Frame;

/// Where answers go: the session's queue of frames for the node.
pub type Answers = tokio::sync::mpsc::Sender<Frame>;

/// Hands requests to the serving thread. Dropping it ends the thread once the requests
/// already given are done (writes included).
pub struct Server {
    requests: mpsc::Sender<(u64, FileOp, Bytes)>,
}

impl Server {
    pub fn start(answers: Answers) -> io::Result<Server> {
        let (requests, incoming) = mpsc::channel();
        std::thread::Builder::new()
            .name("mrun-files".into())
            .spawn(move || serve(incoming, answers))?;
        Ok(Server { requests })
    }

    /// Queue a request; `data` is a `Write`'s payload.
    pub fn ask(&self, id: u64, op: FileOp, data: Bytes) {
        let _ = self.requests.send((id, op, data));
    }
}

/// A file the node opened: home's descriptor, and the first error of a write not told yet.
struct Open {
    file: File,
    failed_write: Option<i32>,
}

fn serve(incoming: mpsc::Receiver<(u64, FileOp, Bytes)>, answers: Answers) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut next_handle = 1u64;
    for (id, op, data) in incoming {
        let quiet = matches!(op, FileOp::Write { .. });
        let (answer, payload) = match carry_out(op, data, &mut open, &mut next_handle) {
            Ok((a, d)) => (Ok(a), d),
            Err(e) => (Err(e.raw_os_error().unwrap_or(libc::EIO)), Bytes::new()),
        };
        if quiet {
            continue;
        }
        if answers
            .blocking_send(Frame::Files(FileMsg::Answer { id, answer }, payload))
            .is_err()
        {
            return; // The session is over.
        }
    }
}

fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn handle(open: &mut HashMap<u64, Open>, h: u64) -> io::Result<&mut Open> {
    open.get_mut(&h)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
}

/// What a write left untold, told now (once).
fn told(o: &mut Open) -> io::Result<()> {
    match o.failed_write.take() {
        Some(e) => Err(io::Error::from_raw_os_error(e)),
        None => Ok(()),
    }
}

fn carry_out(
    op: FileOp,
    data: Bytes,
    open: &mut HashMap<u64, Open>,
    next_handle: &mut u64,
) -> io::Result<(Answer, Bytes)> {
    let done = |a: Answer| Ok((a, Bytes::new()));
    match op {
        FileOp::Lstat { path: p } => {
            done(Answer::Attr(attr(&std::fs::symlink_metadata(path(&p))?)))
        }
        FileOp::List { path: p } => {
            let mut entries = Vec::new();
            for e in std::fs::read_dir(path(&p))? {
                let e = e?;
                let kind = e.file_type().map(|t| kind_of(&t)).unwrap_or(0);
                entries.push(DirEntry {
                    name: e.file_name().as_bytes().to_vec(),
                    ino: e.ino(),
                    kind,
                });
            }
            done(Answer::List(entries))
        }
        FileOp::ReadLink { path: p } => done(Answer::Target(
            std::fs::read_link(path(&p))?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )),
        FileOp::Open {
            path: p,
            flags,
            mode,
        } => {
            // Never our terminal, never blocking on a FIFO: the node refuses those anyway.
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
            let fd: OwnedFd =
                nix::fcntl::open(path(&p), flags, Mode::from_bits_truncate(mode)).map_err(errno)?;
            let file = File::from(fd);
            let meta = file.metadata()?;
            let h = *next_handle;
            *next_handle += 1;
            open.insert(
                h,
                Open {
                    file,
                    failed_write: None,
                },
            );
            done(Answer::Opened {
                handle: h,
                attr: attr(&meta),
            })
        }
        FileOp::Read {
            handle: h,
            offset,
            size,
        } => {
            let o = handle(open, h)?;
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match o.file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            buf.truncate(got);
            Ok((Answer::Data, Bytes::from(buf)))
        }
        FileOp::Write { handle: h, offset } => {
            let o = handle(open, h)?;
            if let Err(e) = o.file.write_all_at(&data, offset) {
                o.failed_write
                    .get_or_insert(e.raw_os_error().unwrap_or(libc::EIO));
            }
            done(Answer::Done)
        }
        FileOp::Flush { handle: h } => {
            told(handle(open, h)?)?;
            done(Answer::Done)
        }
        FileOp::Fsync {
            handle: h,
            data_only,
        } => {
            let o = handle(open, h)?;
            told(o)?;
            if data_only {
                o.file.sync_data()?;
            } else {
                o.file.sync_all()?;
            }
            done(Answer::Done)
        }
        FileOp::Close { handle: h } => {
            if let Some(mut o) = open.remove(&h) {
                told(&mut o)?;
            }
            done(Answer::Done)
        }
        FileOp::SetAttr {
            path: p,
            handle: h,
            set,
        } => {
            set_attr(
                path(&p),
                h.and_then(|h| open.get(&h)).map(|o| &o.file),
                &set,
            )?;
            done(Answer::Attr(attr(&std::fs::symlink_metadata(path(&p))?)))
        }
        FileOp::Mkdir { path: p, mode } => {
            nix::unistd::mkdir(path(&p), Mode::from_bits_truncate(mode)).map_err(errno)?;
            done(Answer::Attr(attr(&std::fs::symlink_metadata(path(&p))?)))
        }
        FileOp::Unlink { path: p } => {
            std::fs::remove_file(path(&p))?;
            done(Answer::Done)
        }
        FileOp::Rmdir { path: p } => {
            std::fs::remove_dir(path(&p))?;
            done(Answer::Done)
        }
        FileOp::Rename { from, to, flags } => {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                path(&from),
                nix::fcntl::AT_FDCWD,
                path(&to),
                nix::fcntl::RenameFlags::from_bits_truncate(flags),
            )
            .map_err(errno)?;
            done(Answer::Done)
        }
        FileOp::Symlink { target, path: p } => {
            std::os::unix::fs::symlink(path(&target), path(&p))?;
            done(Answer::Attr(attr(&std::fs::symlink_metadata(path(&p))?)))
        }
        FileOp::Link { from, to } => {
            std::fs::hard_link(path(&from), path(&to))?;
            done(Answer::Attr(attr(&std::fs::symlink_metadata(path(&to))?)))
        }
        FileOp::Access { path: p, mask } => {
            nix::unistd::faccessat(
                nix::fcntl::AT_FDCWD,
                path(&p),
                nix::unistd::AccessFlags::from_bits_truncate(mask),
                AtFlags::AT_EACCESS,
            )
            .map_err(errno)?;
            done(Answer::Done)
        }
        FileOp::StatFs { path: p } => {
            let s = nix::sys::statvfs::statvfs(path(&p)).map_err(errno)?;
            done(Answer::StatFs(StatFs {
                blocks: s.blocks(),
                bfree: s.blocks_free(),
                bavail: s.blocks_available(),
                files: s.files(),
                ffree: s.files_free(),
                bsize: s.block_size() as u32,
                namelen: s.name_max() as u32,
                frsize: s.fragment_size() as u32,
            }))
        }
    }
}

fn set_attr(p: &Path, file: Option<&File>, set: &SetAttr) -> io::Result<()> {
    if let Some(mode) = set.mode {
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            p,
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(errno)?;
    }
    if set.uid.is_some() || set.gid.is_some() {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            p,
            set.uid.map(nix::unistd::Uid::from_raw),
            set.gid.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
    }
    if let Some(size) = set.size {
        match file {
            Some(f) => f.set_len(size)?,
            None => nix::unistd::truncate(p, size as i64).map_err(errno)?,
        }
    }
    if set.atime_ns.is_some() || set.mtime_ns.is_some() {
        let spec = |t: Option<i128>| match t {
            None => TimeSpec::UTIME_OMIT,
            Some(-1) => TimeSpec::UTIME_NOW,
            Some(ns) => TimeSpec::new(
                ns.div_euclid(1_000_000_000) as i64,
                ns.rem_euclid(1_000_000_000) as i64,
            ),
        };
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &spec(set.atime_ns),
            &spec(set.mtime_ns),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(errno)?;
    }
    Ok(())
}

fn kind_of(t: &std::fs::FileType) -> u32 {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        libc::S_IFDIR
    } else if t.is_symlink() {
        libc::S_IFLNK
    } else if t.is_file() {
        libc::S_IFREG
    } else if t.is_fifo() {
        libc::S_IFIFO
    } else if t.is_socket() {
        libc::S_IFSOCK
    } else if t.is_block_device() {
        libc::S_IFBLK
    } else if t.is_char_device() {
        libc::S_IFCHR
    } else {
        0
    }
}

/// The attributes home reports for a file.
pub fn attr(m: &std::fs::Metadata) -> Attr {
    Attr {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev(),
        size: m.size(),
        blocks: m.blocks(),
        atime_ns: m.atime() as i128 * 1_000_000_000 + m.atime_nsec() as i128,
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
    }
}
