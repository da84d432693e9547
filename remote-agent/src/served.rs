//! Home's files on this node: the FUSE file system the restored job gets as its root when this
//! node does not have the job's files (see `docs/served-files.md`). Each kernel request
//! becomes a request to home's deputy over the job's session; the kernel gets its answer when
//! home's arrives, so many requests (read-ahead) are on their way at once. Writes are not
//! waited for (write-behind): a failed one is told by the next flush, fsync or close. Files
//! this node has exactly as home has them (a program and its libraries, by size and mtime)
//! are read from the node's own disk.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use mrun_core::wire::files::{Answer, Attr, DirEntry, FileMsg, FileOp, SetAttr};
use mrun_core::wire::Frame;
use tokio::sync::mpsc;

/// How long the kernel may keep names and attributes without asking again.
const TTL: Duration = Duration::from_secs(1);

/// Largest read and write the kernel sends in one request.
const MAX_IO: u32 = 1 << 20;

/// The part shared by the FUSE session's thread (which asks) and the agent's reader of home's
/// frames (which answers).
pub struct Served {
    asks: mpsc::Sender<Frame>,
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Handles opened for writing: only their flushes can have something to tell.
    writable: Mutex<std::collections::HashSet<u64>>,
    next_fh: AtomicU64,
    /// Home no longer answers for this copy of the job (it lives elsewhere now, or home is
    /// gone): requests are answered here.
    closed: std::sync::atomic::AtomicBool,
}

/// A kernel request waiting for home's answer.
enum Waiting {
    Entry(ReplyEntry, Vec<u8>),
    Attr(ReplyAttr, u64),
    Data(ReplyData),
    Link(ReplyData),
    Empty(ReplyEmpty),
    Open(ReplyOpen, u64),
    OpenDir(ReplyOpen, u64),
    Create(ReplyCreate, Vec<u8>, u64),
    StatFs(ReplyStatfs),
    /// Nothing to tell the kernel (a close whose release was answered already).
    Nobody,
}

enum Handle {
    /// Opened at home: home's handle.
    Home(u64),
    /// The node's own copy, the very same as home's.
    Local(File),
    Dir(Vec<DirEntry>),
    /// Asked for, not answered yet.
    Pending,
}

/// Inode numbers <-> home's paths. A file's number is home's inode number when free (so
/// that `stat` shows what it shows at home), else one of ours.
#[derive(Default)]
struct Nodes {
    paths: HashMap<u64, (Vec<u8>, Option<Attr>)>,
    numbers: HashMap<Vec<u8>, u64>,
    next_own: u64,
}

impl Nodes {
    fn new() -> Nodes {
        let mut n = Nodes {
            next_own: 1 << 56,
            ..Nodes::default()
        };
        n.paths.insert(INodeNo::ROOT.0, (b"/".to_vec(), None));
        n.numbers.insert(b"/".to_vec(), INodeNo::ROOT.0);
        n
    }

    fn path(&self, ino: INodeNo) -> Option<Vec<u8>> {
        self.paths.get(&ino.0).map(|(p, _)| p.clone())
    }

    fn attr(&self, ino: INodeNo) -> Option<Attr> {
        self.paths.get(&ino.0).and_then(|(_, a)| a.clone())
    }

    /// The number of `path`, whose attributes home just gave.
    fn number(&mut self, path: &[u8], attr: &Attr) -> u64 {
        if path == b"/" {
            return INodeNo::ROOT.0;
        }
        if let Some(&n) = self.numbers.get(path) {
            if let Some(entry) = self.paths.get_mut(&n) {
                if entry
                    .1
                    .as_ref()
                    .is_none_or(|a| a.ino == attr.ino && a.dev == attr.dev)
                {
                    entry.1 = Some(attr.clone());
                    return n;
                }
            }
        }
        let home = attr.ino;
        let free = home > INodeNo::ROOT.0
            && home < 1 << 56
            && self.paths.get(&home).is_none_or(|(p, a)| {
                p.as_slice() == path
                    || a.as_ref()
                        .is_some_and(|a| a.dev == attr.dev && a.ino == home)
            });
        let n = if free {
            home
        } else {
            self.next_own += 1;
            self.next_own
        };
        self.paths.insert(n, (path.to_vec(), Some(attr.clone())));
        self.numbers.insert(path.to_vec(), n);
        n
    }

    fn forget_path(&mut self, path: &[u8]) {
        self.numbers.remove(path);
    }

    /// `from` is now `to`, and so is everything below it.
    fn renamed(&mut self, from: &[u8], to: &[u8]) {
        let below =
            |p: &[u8]| p == from || (p.starts_with(from) && p.get(from.len()) == Some(&b'/'));
        self.numbers.retain(|p, _| p.as_slice() != to);
        let moved: Vec<(Vec<u8>, u64)> = self
            .numbers
            .iter()
            .filter(|(p, _)| below(p))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        for (old, n) in moved {
            let mut new = to.to_vec();
            new.extend_from_slice(&old[from.len()..]);
            self.numbers.remove(&old);
            self.numbers.insert(new.clone(), n);
            if let Some(entry) = self.paths.get_mut(&n) {
                entry.0 = new;
            }
        }
    }
}

fn child(parent: &[u8], name: &OsStr) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name.as_bytes());
    p
}

fn time(ns: i128) -> SystemTime {
    if ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs() as u64)
    }
}

fn ns(t: TimeOrNow) -> i128 {
    match t {
        TimeOrNow::Now => -1,
        TimeOrNow::SpecificTime(t) => match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn file_attr(n: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(n),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.ctime_ns),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink as u32,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Served {
    pub fn new(asks: mpsc::Sender<Frame>) -> Arc<Served> {
        Arc::new(Served {
            asks,
            next_id: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            nodes: Mutex::new(Nodes::new()),
            handles: Mutex::new(HashMap::new()),
            writable: Mutex::new(std::collections::HashSet::new()),
            next_fh: AtomicU64::new(1),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on answer here: closing and flushing succeed (what this copy wrote is moot:
    /// another copy carries on, or none), everything else fails with EIO. Requests waiting
    /// for home fail at once.
    pub fn close(&self) {
        let waiting: Vec<Waiting> = {
            let mut all = lock(&self.waiting);
            self.closed.store(true, Ordering::SeqCst);
            all.drain().map(|(_, w)| w).collect()
        };
        for w in waiting {
            fail(w, libc::EIO);
        }
    }

    /// Send `op` to home; `waiting` gets the answer. A lost session fails it (EIO).
    fn ask(&self, op: FileOp, data: Bytes, waiting: Waiting) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            // Checked under the lock `close` takes: nothing waits after it drained.
            let mut all = lock(&self.waiting);
            if self.closed.load(Ordering::SeqCst) {
                drop(all);
                return match (waiting, op) {
                    (Waiting::Empty(r), FileOp::Flush { .. } | FileOp::Close { .. }) => r.ok(),
                    (w, _) => fail(w, libc::EIO),
                };
            }
            if !matches!(op, FileOp::Write { .. }) {
                all.insert(id, waiting);
            }
        }
        if self
            .asks
            .blocking_send(Frame::Files(FileMsg::Ask { id, op }, data))
            .is_err()
        {
            // Home is gone: dropping the reply tells the kernel EIO.
            lock(&self.waiting).remove(&id);
        }
    }

    fn new_fh(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    fn path(&self, ino: INodeNo) -> Option<Vec<u8>> {
        lock(&self.nodes).path(ino)
    }

    /// Home's handle for the kernel's `fh`, if the file was opened at home.
    fn home_handle(&self, fh: FileHandle) -> Option<u64> {
        match lock(&self.handles).get(&fh.0) {
            Some(Handle::Home(h)) => Some(*h),
            _ => None,
        }
    }

    /// Home answered request `id`.
    pub fn answered(&self, id: u64, answer: Result<Answer, i32>, data: Bytes) {
        let Some(w) = lock(&self.waiting).remove(&id) else {
            return;
        };
        let a = match answer {
            Ok(a) => a,
            Err(e) => {
                if let Waiting::Open(_, fh) | Waiting::OpenDir(_, fh) | Waiting::Create(_, _, fh) =
                    &w
                {
                    lock(&self.handles).remove(fh);
                }
                return fail(w, e);
            }
        };
        match (w, a) {
            (Waiting::Entry(reply, path), Answer::Attr(attr)) => {
                let n = lock(&self.nodes).number(&path, &attr);
                reply.entry(&TTL, &file_attr(n, &attr), Generation(0));
            }
            (Waiting::Attr(reply, n), Answer::Attr(attr)) => {
                if let Some(entry) = lock(&self.nodes).paths.get_mut(&n) {
                    entry.1 = Some(attr.clone());
                }
                reply.attr(&TTL, &file_attr(n, &attr));
            }
            (Waiting::Data(reply), Answer::Data) => reply.data(&data),
            (Waiting::Link(reply), Answer::Target(t)) => reply.data(&t),
            (Waiting::Empty(reply), Answer::Done) => reply.ok(),
            (Waiting::Open(reply, fh), Answer::Opened { handle, .. }) => {
                lock(&self.handles).insert(fh, Handle::Home(handle));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            (Waiting::OpenDir(reply, fh), Answer::List(entries)) => {
                lock(&self.handles).insert(fh, Handle::Dir(entries));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            (Waiting::Create(reply, path, fh), Answer::Opened { handle, attr }) => {
                lock(&self.handles).insert(fh, Handle::Home(handle));
                let n = lock(&self.nodes).number(&path, &attr);
                reply.created(
                    &TTL,
                    &file_attr(n, &attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                );
            }
            (Waiting::StatFs(reply), Answer::StatFs(s)) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            (Waiting::Nobody, _) => {}
            (w, _) => fail(w, libc::EIO),
        }
    }

    /// The node's own copy of the file numbered `ino`, if it is the very same as home's (by
    /// size and modification time, as file-backed mappings are matched elsewhere).
    fn local_copy(&self, ino: INodeNo, path: &[u8]) -> Option<File> {
        let home = lock(&self.nodes).attr(ino)?;
        if home.mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let p = Path::new(OsStr::from_bytes(path));
        let f = File::open(p).ok()?;
        let here = f.metadata().ok()?;
        let mtime = here.mtime() as i128 * 1_000_000_000 + here.mtime_nsec() as i128;
        (here.is_file() && here.size() == home.size && mtime == home.mtime_ns).then_some(f)
    }
}

fn fail(w: Waiting, e: i32) {
    let e = errno(e);
    match w {
        Waiting::Entry(r, _) => r.error(e),
        Waiting::Attr(r, _) => r.error(e),
        Waiting::Data(r) | Waiting::Link(r) => r.error(e),
        Waiting::Empty(r) => r.error(e),
        Waiting::Open(r, _) | Waiting::OpenDir(r, _) => r.error(e),
        Waiting::Create(r, _, _) => r.error(e),
        Waiting::StatFs(r) => r.error(e),
        Waiting::Nobody => {}
    }
}

/// The FUSE file system: the kernel's side of [`Served`].
pub struct HomeFiles(pub Arc<Served>);

macro_rules! path_or {
    ($s:expr, $ino:expr, $reply:expr) => {
        match $s.path($ino) {
            Some(p) => p,
            None => return $reply.error(Errno::from_i32(libc::ESTALE)),
        }
    };
}

impl Filesystem for HomeFiles {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(32);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), name);
        s.ask(
            FileOp::Lstat { path: path.clone() },
            Bytes::new(),
            Waiting::Entry(reply, path),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        s.ask(
            FileOp::Lstat { path },
            Bytes::new(),
            Waiting::Attr(reply, ino.0),
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        let handle = fh.and_then(|fh| s.home_handle(fh));
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime_ns: atime.map(ns),
            mtime_ns: mtime.map(ns),
        };
        s.ask(
            FileOp::SetAttr { path, handle, set },
            Bytes::new(),
            Waiting::Attr(reply, ino.0),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        s.ask(
            FileOp::ReadLink { path },
            Bytes::new(),
            Waiting::Link(reply),
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // FIFOs, sockets and devices of home cannot be served: only files and directories.
        reply.error(Errno::from_i32(libc::EPERM));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), name);
        s.ask(
            FileOp::Mkdir {
                path: path.clone(),
                mode: mode & !umask,
            },
            Bytes::new(),
            Waiting::Entry(reply, path),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), name);
        lock(&s.nodes).forget_path(&path);
        s.ask(FileOp::Unlink { path }, Bytes::new(), Waiting::Empty(reply));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), name);
        lock(&s.nodes).forget_path(&path);
        s.ask(FileOp::Rmdir { path }, Bytes::new(), Waiting::Empty(reply));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), link_name);
        s.ask(
            FileOp::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
                path: path.clone(),
            },
            Bytes::new(),
            Waiting::Entry(reply, path),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let from = child(&path_or!(s, parent, reply), name);
        let to = child(&path_or!(s, newparent, reply), newname);
        // Told before home answers: the next request about either name comes after this one
        // on the connection, and home carries requests out in order.
        lock(&s.nodes).renamed(&from, &to);
        s.ask(
            FileOp::Rename {
                from,
                to,
                flags: flags.bits(),
            },
            Bytes::new(),
            Waiting::Empty(reply),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let s = &self.0;
        let from = path_or!(s, ino, reply);
        let to = child(&path_or!(s, newparent, reply), newname);
        s.ask(
            FileOp::Link {
                from,
                to: to.clone(),
            },
            Bytes::new(),
            Waiting::Entry(reply, to),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        if flags.0 & libc::O_ACCMODE == libc::O_RDONLY && flags.0 & libc::O_TRUNC == 0 {
            if let Some(f) = s.local_copy(ino, &path) {
                let fh = s.new_fh(Handle::Local(f));
                return reply.opened(FileHandle(fh), FopenFlags::empty());
            }
        }
        let fh = s.new_fh(Handle::Pending);
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            lock(&s.writable).insert(fh);
        }
        s.ask(
            FileOp::Open {
                path,
                flags: flags.0 & !(libc::O_CREAT | libc::O_EXCL),
                mode: 0,
            },
            Bytes::new(),
            Waiting::Open(reply, fh),
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.0;
        let home = match lock(&s.handles).get(&fh.0) {
            Some(Handle::Home(h)) => *h,
            Some(Handle::Local(f)) => {
                let mut buf = vec![0u8; size as usize];
                let mut got = 0;
                while got < buf.len() {
                    match f.read_at(&mut buf[got..], offset + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return reply.error(errno(e.raw_os_error().unwrap_or(libc::EIO))),
                    }
                }
                return reply.data(&buf[..got]);
            }
            _ => return reply.error(Errno::from_i32(libc::EBADF)),
        };
        s.ask(
            FileOp::Read {
                handle: home,
                offset,
                size,
            },
            Bytes::new(),
            Waiting::Data(reply),
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let s = &self.0;
        let Some(home) = s.home_handle(fh) else {
            return reply.error(Errno::from_i32(libc::EBADF));
        };
        // Write-behind: home carries it out in order; a failure is told at flush or fsync.
        s.ask(
            FileOp::Write {
                handle: home,
                offset,
            },
            Bytes::copy_from_slice(data),
            Waiting::Nobody,
        );
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        if !lock(&s.writable).contains(&fh.0) {
            return reply.ok(); // Nothing written through it: nothing to tell.
        }
        let Some(home) = s.home_handle(fh) else {
            return reply.ok();
        };
        s.ask(
            FileOp::Flush { handle: home },
            Bytes::new(),
            Waiting::Empty(reply),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let handle = lock(&s.handles).remove(&fh.0);
        lock(&s.writable).remove(&fh.0);
        if let Some(Handle::Home(h)) = handle {
            s.ask(FileOp::Close { handle: h }, Bytes::new(), Waiting::Nobody);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let s = &self.0;
        let Some(home) = s.home_handle(fh) else {
            return reply.ok(); // A file read from the node's own disk, or a directory.
        };
        s.ask(
            FileOp::Fsync {
                handle: home,
                data_only: datasync,
            },
            Bytes::new(),
            Waiting::Empty(reply),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        let fh = s.new_fh(Handle::Pending);
        s.ask(
            FileOp::List { path },
            Bytes::new(),
            Waiting::OpenDir(reply, fh),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = &self.0;
        let handles = lock(&s.handles);
        let Some(Handle::Dir(entries)) = handles.get(&fh.0) else {
            return reply.error(Errno::from_i32(libc::EBADF));
        };
        let dots = [
            (b".".to_vec(), ino.0, libc::S_IFDIR),
            (b"..".to_vec(), 1, libc::S_IFDIR),
        ];
        let all = dots
            .iter()
            .map(|(n, i, k)| (n.as_slice(), *i, *k))
            .chain(entries.iter().map(|e| (e.name.as_slice(), e.ino, e.kind)));
        for (i, (name, number, k)) in all.enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(number.max(2)),
                i as u64 + 1,
                kind(k),
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.0.handles).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        s.ask(
            FileOp::StatFs { path },
            Bytes::new(),
            Waiting::StatFs(reply),
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let s = &self.0;
        let path = path_or!(s, ino, reply);
        s.ask(
            FileOp::Access {
                path,
                mask: mask.bits(),
            },
            Bytes::new(),
            Waiting::Empty(reply),
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let s = &self.0;
        let path = child(&path_or!(s, parent, reply), name);
        let fh = s.new_fh(Handle::Pending);
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            lock(&s.writable).insert(fh);
        }
        s.ask(
            FileOp::Open {
                path: path.clone(),
                flags: flags | libc::O_CREAT,
                mode: mode & !umask,
            },
            Bytes::new(),
            Waiting::Create(reply, path, fh),
        );
    }
}
