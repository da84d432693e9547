//! Which of home's files a job uses, and whether a node sees the very same ones: home lists
//! them before a move (`used_by`), the node's agent compares (`first_difference`) and, if any
//! differs, gives the restored job home's files instead of its own.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sys::Pid;

/// A file or directory the job uses, as home sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenFile {
    pub path: Vec<u8>,
    pub use_: Use,
    /// `st_mode & S_IFMT`.
    pub kind: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl SeenFile {
    fn of(path: Vec<u8>, use_: Use, meta: &std::fs::Metadata) -> SeenFile {
        let id = crate::resource::identity_of(meta);
        SeenFile {
            path,
            use_,
            kind: meta.mode() & libc::S_IFMT,
            dev: id.dev,
            ino: id.ino,
            size: id.size,
            mtime_ns: id.mtime_ns,
        }
    }
}

/// How the job uses it, which decides what "the same file" means on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Use {
    /// Its working directory, or a file it has open: the very same file (same inode on the
    /// same boot; elsewhere same inode number and, for a regular file, size and mtime).
    Data,
    /// Its program and the files it maps: the same contents (size and mtime), as for
    /// file-backed mappings restored elsewhere.
    Code,
}

/// Trees every machine has its own of: never compared, never served.
pub fn node_local(path: &[u8]) -> bool {
    ["/proc", "/sys", "/dev"]
        .iter()
        .any(|t| path == t.as_bytes() || path.starts_with(format!("{t}/").as_bytes()))
}

/// The job's working directory, open files and directories, program and mapped files: those
/// of `root` and all its descendants. What cannot be read (a process that ended) is left out.
pub fn used_by(root: Pid) -> Vec<SeenFile> {
    let mut members = vec![root];
    members.extend(crate::sys::process::descendants(root));
    let mut seen: Vec<SeenFile> = Vec::new();
    for pid in members {
        let proc_dir = format!("/proc/{pid}");
        add(&mut seen, Path::new(&format!("{proc_dir}/cwd")), Use::Data);
        add(&mut seen, Path::new(&format!("{proc_dir}/exe")), Use::Code);
        if let Ok(fds) = std::fs::read_dir(format!("{proc_dir}/fd")) {
            for fd in fds.flatten() {
                add(&mut seen, &fd.path(), Use::Data);
                if let Some(bound) = socket_file(pid, &fd.path()) {
                    if !node_local(&bound.path) && !seen.iter().any(|s| s.path == bound.path) {
                        // A socket file is made anew at each restore: the directory it is
                        // in tells whether the node has the job's files there.
                        let dir = Path::new(std::ffi::OsStr::from_bytes(&bound.path)).parent();
                        if let Some(dir) = dir {
                            add_path(&mut seen, dir, Use::Data);
                        }
                        seen.push(bound);
                    }
                }
            }
        }
        // From maps, not map_files (whose links need CAP_CHECKPOINT_RESTORE).
        let maps = procfs::process::Process::new(pid.as_raw()).and_then(|p| p.maps());
        for m in maps.into_iter().flatten() {
            let procfs::process::MMapPath::Path(p) = &m.pathname else {
                continue;
            };
            let bytes = p.as_os_str().as_bytes();
            if node_local(bytes) || seen.iter().any(|s| s.path == bytes) {
                continue;
            }
            match std::fs::metadata(p) {
                Ok(meta) if meta.ino() == m.inode => {
                    seen.push(SeenFile::of(bytes.to_vec(), Use::Code, &meta))
                }
                // Replaced or deleted since it was mapped: its pages travel in the image.
                _ => {}
            }
        }
    }
    seen
}

/// What the descriptor, working directory or mapping at `link` (in /proc) names, if it is a
/// file the node might not have.
fn add(seen: &mut Vec<SeenFile>, link: &Path, use_: Use) {
    let Ok(target) = std::fs::read_link(link) else {
        return;
    };
    let path = target.as_os_str().as_bytes().to_vec();
    if !path.starts_with(b"/") || node_local(&path) || seen.iter().any(|s| s.path == path) {
        return; // Not a path (a pipe, a socket), or one the node has its own of.
    }
    // stat through the link: the file the process holds, even if the path now names
    // another (then the node is compared against what the process holds).
    let Ok(meta) = std::fs::metadata(link) else {
        return;
    };
    if meta.nlink() == 0 {
        return; // Deleted: its contents travel in the image.
    }
    seen.push(SeenFile::of(path, use_, &meta));
}

/// A directory by its path (as home sees it), if not listed yet.
fn add_path(seen: &mut Vec<SeenFile>, path: &Path, use_: Use) {
    let bytes = path.as_os_str().as_bytes();
    if node_local(bytes) || seen.iter().any(|s| s.path == bytes) {
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        seen.push(SeenFile::of(bytes.to_vec(), use_, &meta));
    }
}

/// The socket file a unix socket of `pid` (descriptor link `link`) is bound to, if any.
fn socket_file(pid: Pid, link: &Path) -> Option<SeenFile> {
    use std::os::fd::AsRawFd;
    let target = std::fs::read_link(link).ok()?;
    if !target.as_os_str().as_bytes().starts_with(b"socket:") {
        return None;
    }
    let fd: i32 = link.file_name()?.to_str()?.parse().ok()?;
    let copy = crate::sys::pidfd::get_fd(pid, fd).ok()?;
    let addr: nix::sys::socket::UnixAddr = nix::sys::socket::getsockname(copy.as_raw_fd()).ok()?;
    let name = addr.path()?;
    // A name bound relative to a directory: the working directory now is the best guess (as
    // for the listeners the checkpoint carries), checked by the inode below.
    let path = if name.is_absolute() {
        name.to_path_buf()
    } else {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()?
            .join(name)
    };
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
        return None;
    }
    Some(SeenFile::of(
        path.as_os_str().as_bytes().to_vec(),
        Use::Data,
        &meta,
    ))
}

/// The first of `seen` that this machine does not have as home has it (or a sentence on why
/// it cannot tell), `None` when every one is the same here. `same_boot`: home is this very
/// boot of this machine (nodes on one machine in separate mount namespaces).
pub fn first_difference(seen: &[SeenFile], same_boot: bool) -> Option<String> {
    seen.iter().find_map(|s| {
        if s.kind == libc::S_IFSOCK {
            return None; // Made anew at each restore: its directory is compared instead.
        }
        let p = Path::new(std::ffi::OsStr::from_bytes(&s.path));
        let shown = p.display();
        let Ok(here) = std::fs::metadata(p) else {
            return Some(format!("{shown} does not exist here"));
        };
        let kind = here.mode() & libc::S_IFMT;
        let mtime = crate::resource::identity_of(&here).mtime_ns;
        let same = kind == s.kind
            && match (s.use_, same_boot) {
                (_, true) => here.dev() == s.dev && here.ino() == s.ino,
                (Use::Data, false) if kind == libc::S_IFREG => {
                    here.ino() == s.ino && here.size() == s.size && mtime == s.mtime_ns
                }
                (Use::Data, false) => here.ino() == s.ino && mtime == s.mtime_ns,
                (Use::Code, false) => here.size() == s.size && mtime == s.mtime_ns,
            };
        (!same).then(|| format!("{shown} is not the same file here"))
    })
}

/// Why one of `seen` cannot be given to the job from home, if one cannot: only directories,
/// regular files and symbolic links are served.
pub fn unservable(seen: &[SeenFile]) -> Option<String> {
    seen.iter().find_map(|s| {
        let what = match s.kind {
            libc::S_IFDIR | libc::S_IFREG | libc::S_IFLNK => return None,
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a unix socket",
            libc::S_IFCHR | libc::S_IFBLK => "a device file",
            _ => "a special file",
        };
        Some(format!(
            "it holds {what}, {}, which cannot be given to it from home",
            Path::new(std::ffi::OsStr::from_bytes(&s.path)).display()
        ))
    })
}
