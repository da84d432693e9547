//! File descriptors: regular files and directories (reopened by path at the same offset, after
//! checking they are the same files), character devices such as /dev/null, and stdio pipes and
//! terminals (connected to whoever restores the image).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use crate::engine::error::{Context, EngineError, Result};
use crate::engine::Refusal;
use crate::image::model::{Fd, FdKind};
use crate::sys::Pid;

/// Devices that carry no state and can be opened again by path.
const DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

fn is_terminal_path(p: &str) -> bool {
    p.starts_with("/dev/pts/")
        || p.starts_with("/dev/tty")
        || p == "/dev/console"
        || p == "/dev/ptmx"
}

struct FdInfo {
    pos: u64,
    flags: i32,
}

fn fdinfo(pid: Pid, fd: i32) -> Result<FdInfo> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    let mut info = FdInfo { pos: 0, flags: 0 };
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim();
            match k {
                "pos" => info.pos = v.parse().unwrap_or(0),
                "flags" => info.flags = i32::from_str_radix(v, 8).unwrap_or(0),
                _ => {}
            }
        }
    }
    Ok(info)
}

fn refuse(pid: Pid, fd: i32, what: &str) -> EngineError {
    Refusal::Descriptor {
        pid,
        fd,
        what: what.to_string(),
    }
    .into()
}

/// The fd table of `pid`, or a refusal naming the first descriptor that cannot be carried.
pub fn capture(pid: Pid, share_stdio_with: Option<Pid>) -> Result<Vec<Fd>> {
    let dir = format!("/proc/{pid}/fd");
    let mut numbers: Vec<i32> = std::fs::read_dir(&dir)
        .ctx(|| format!("listing {dir}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    let mut links = Vec::with_capacity(numbers.len());
    for fd in numbers {
        let link =
            std::fs::read_link(format!("{dir}/{fd}")).ctx(|| format!("reading {dir}/{fd}"))?;
        links.push((fd, link.to_string_lossy().into_owned(), fdinfo(pid, fd)?));
    }
    // Pipes whose both ends this process holds (self-pipes) travel with it.
    let mut pipe_ends: HashMap<String, (bool, bool)> = HashMap::new();
    for (_, target, info) in &links {
        if target.starts_with("pipe:") {
            let e = pipe_ends.entry(target.clone()).or_default();
            if info.flags & libc::O_ACCMODE == libc::O_RDONLY {
                e.0 = true
            } else {
                e.1 = true
            }
        }
    }
    // Pipes and terminals are allowed on stdio, and on other fds that share one of them.
    let mut stdio_targets: HashMap<String, u8> = HashMap::new();
    for (fd, target, _) in &links {
        let shared = share_stdio_with
            .is_some_and(|deputy| crate::sys::kcmp::same_open_file(pid, *fd, deputy, *fd));
        if (0..=2).contains(fd)
            && (shared || target.starts_with("pipe:") || is_terminal_path(target))
        {
            stdio_targets.entry(target.clone()).or_insert(*fd as u8);
        }
    }
    let mut out = Vec::new();
    for (fd, target, info) in links {
        let cloexec = info.flags & libc::O_CLOEXEC != 0;
        let flags = info.flags & !libc::O_CLOEXEC;
        let kind = if target.starts_with("socket:") {
            return Err(refuse(pid, fd, "a socket"));
        } else if let Some(anon) = target.strip_prefix("anon_inode:") {
            let name = anon.trim_matches(|c| c == '[' || c == ']');
            let what = match name {
                "eventpoll" => "an epoll instance",
                "eventfd" => "an eventfd",
                "signalfd" => "a signalfd",
                "timerfd" => "a timerfd",
                "inotify" => "an inotify instance",
                "io_uring" => "an io_uring instance",
                "pidfd" => "a pidfd",
                _ => {
                    return Err(refuse(
                        pid,
                        fd,
                        &format!("an unsupported kernel object ({target})"),
                    ))
                }
            };
            return Err(refuse(pid, fd, what));
        } else if let Some(slot) = stdio_targets.get(&target) {
            FdKind::Stdio { slot: *slot }
        } else if target.starts_with("pipe:") {
            if pipe_ends.get(target.as_str()) != Some(&(true, true)) {
                return Err(refuse(
                    pid,
                    fd,
                    "a pipe shared with another process (not stdio)",
                ));
            }
            capture_self_pipe(pid, fd, &target, flags)?
        } else if is_terminal_path(&target) {
            return Err(refuse(
                pid,
                fd,
                &format!("a terminal ({target}) that is not stdio"),
            ));
        } else if DEVICES.contains(&target.as_str()) {
            FdKind::Device {
                path: target,
                flags,
            }
        } else if target.ends_with(" (deleted)") || target.starts_with("/memfd:") {
            return Err(refuse(pid, fd, &format!("a deleted file ({target})")));
        } else if !target.starts_with('/') {
            return Err(refuse(
                pid,
                fd,
                &format!("an unsupported kind of file ({target})"),
            ));
        } else {
            let meta =
                std::fs::metadata(format!("{dir}/{fd}")).ctx(|| format!("stat of {target}"))?;
            let ft = meta.file_type();
            if !(ft.is_file() || ft.is_dir()) {
                let what = if ft.is_fifo() {
                    "a named pipe"
                } else if ft.is_char_device() || ft.is_block_device() {
                    "a device"
                } else {
                    "a special file"
                };
                return Err(refuse(pid, fd, &format!("{what} ({target})")));
            }
            FdKind::Path {
                path: target,
                flags,
                offset: info.pos,
                identity: super::identity_of(&meta),
            }
        };
        out.push(Fd { fd, cloexec, kind });
    }
    Ok(out)
}

/// One end of a self-pipe. The read end carries the buffered bytes, copied with tee(2) so
/// the process's pipe keeps them.
fn capture_self_pipe(pid: Pid, fd: i32, target: &str, flags: i32) -> Result<FdKind> {
    let id = target
        .trim_start_matches("pipe:[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or(0);
    let write_end = flags & libc::O_ACCMODE != libc::O_RDONLY;
    let path = format!("/proc/{pid}/fd/{fd}");
    let end = std::fs::OpenOptions::new()
        .read(!write_end)
        .write(write_end)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .ctx(|| format!("opening {path}"))?;
    let size = crate::sys::pipe::capacity(&end).ctx(|| format!("F_GETPIPE_SZ of {path}"))?;
    let data = if write_end {
        Vec::new()
    } else {
        crate::sys::pipe::peek_all(&end).ctx(|| format!("copying the contents of {path}"))?
    };
    Ok(FdKind::Pipe {
        id,
        write_end,
        flags,
        size,
        data,
    })
}

/// The descriptors of a restore, opened by the restorer: `(target fd, source)` pairs for the
/// fresh process to install, and the fds that must end up close-on-exec.
pub struct Prepared {
    pub opened: Vec<OwnedFd>,
    pub plan: Vec<(RawFd, RawFd)>,
    pub cloexec: Vec<RawFd>,
}

/// Open every file of the image in this process. `stdio[k]` is the fd that stands in for the
/// original process's stdio slot k (pipes and terminals).
pub fn prepare(fds: &[Fd], stdio: [RawFd; 3], same_machine: bool) -> Result<Prepared> {
    let mut p = Prepared {
        opened: Vec::new(),
        plan: Vec::new(),
        cloexec: Vec::new(),
    };
    let mut pipes: HashMap<u64, (RawFd, RawFd)> = HashMap::new();
    for f in fds {
        let source = match &f.kind {
            FdKind::Stdio { slot } => stdio.get(*slot as usize).copied().unwrap_or(-1),
            FdKind::Pipe {
                id,
                write_end,
                flags,
                size,
                data,
            } => {
                if !pipes.contains_key(id) {
                    let (r, w) =
                        crate::sys::pipe::create(*size).ctx(|| "creating a pipe".into())?;
                    pipes.insert(*id, (r.as_raw_fd(), w.as_raw_fd()));
                    p.opened.push(r);
                    p.opened.push(w);
                }
                let (r, w) = pipes.get(id).copied().unwrap_or((-1, -1));
                let end = if *write_end { w } else { r };
                if !data.is_empty() {
                    crate::sys::pipe::fill(w, data).ctx(|| "refilling a pipe".into())?;
                }
                crate::sys::pipe::set_status_flags(end, *flags)
                    .ctx(|| "setting pipe flags".into())?;
                end
            }
            FdKind::Device { path, flags } => open(path, *flags, &mut p)?,
            FdKind::Path {
                path,
                flags,
                offset,
                identity,
            } => {
                let raw = open(path, *flags, &mut p)?;
                let meta = std::fs::metadata(format!("/proc/self/fd/{raw}"))
                    .ctx(|| format!("stat of {path}"))?;
                // A file the process only reads must hold the same bytes; one it writes may
                // have grown by others' writes (a shared log, a shell's stderr), but must be the
                // same file.
                let reads_only = flags & libc::O_ACCMODE == libc::O_RDONLY && !meta.is_dir();
                let same = super::same_file(identity, &meta, same_machine, reads_only);
                if !same {
                    return Err(EngineError::Unrestorable(format!(
                        "{path} (fd {}) changed since the checkpoint; restoring would give wrong results",
                        f.fd
                    )));
                }
                if !meta.is_dir() {
                    // SAFETY: lseek on a descriptor we own.
                    if unsafe { libc::lseek(raw, *offset as libc::off_t, libc::SEEK_SET) } < 0 {
                        return Err(EngineError::Os {
                            what: format!("seeking {path}"),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                }
                raw
            }
        };
        p.plan.push((f.fd, source));
        if f.cloexec {
            p.cloexec.push(f.fd);
        }
    }
    Ok(p)
}

fn open(path: &str, flags: i32, p: &mut Prepared) -> Result<RawFd> {
    let access = flags & libc::O_ACCMODE;
    let keep =
        flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
    let file = std::fs::OpenOptions::new()
        .read(access == libc::O_RDONLY || access == libc::O_RDWR)
        .write(access == libc::O_WRONLY || access == libc::O_RDWR)
        .custom_flags(keep | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| EngineError::Unrestorable(format!("cannot open {path}: {e}")))?;
    let fd: OwnedFd = file.into();
    let raw = fd.as_raw_fd();
    p.opened.push(fd);
    Ok(raw)
}
