//! File descriptors: regular files and directories (reopened by path at the same offset, after
//! checking they are the same files), character devices such as /dev/null, stdio pipes and
//! terminals (connected to whoever restores the image), pipes and unix socket pairs inside the
//! job (`sockets`), event objects: eventfd, timerfd, signalfd, epoll, inotify (`events`).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
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

pub struct FdInfo {
    pos: u64,
    flags: i32,
}

/// The offset and flags of descriptor `fd` of `pid`. A field missing or unreadable is an
/// error, never a silent 0 (which would reopen a file read-only at its start).
fn fdinfo(pid: Pid, fd: i32) -> Result<FdInfo> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    parse_fdinfo(&text).ok_or_else(|| {
        EngineError::Unrestorable(format!(
            "cannot read the offset and flags of fd {fd} of pid {pid} in {path}"
        ))
    })
}

fn parse_fdinfo(text: &str) -> Option<FdInfo> {
    let field = |name: &str| fdinfo_field(text, name);
    Some(FdInfo {
        // Printed signed; directory positions of some file systems are hash cookies that use
        // all 64 bits.
        pos: field("pos")?.parse::<i64>().ok()? as u64,
        flags: i32::from_str_radix(field("flags")?, 8).ok()?,
    })
}

/// The refusal of descriptor `fd` of `pid`, saying in a few words what it holds.
pub(super) fn refuse(pid: Pid, fd: i32, what: impl Into<String>) -> EngineError {
    Refusal::Descriptor {
        pid,
        fd,
        what: what.into(),
    }
    .into()
}

/// The value of `name:` in fdinfo `text`, trimmed.
pub(super) fn fdinfo_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The open files of a job being captured: each open file description once, however many
/// descriptors of however many members refer to it.
#[derive(Default)]
pub struct FileTable {
    pub files: Vec<FdKind>,
    /// A descriptor referring to each file (`pid`, fd, link target), to compare others with.
    holders: Vec<(Pid, i32, String)>,
    /// Pipes whose buffered bytes were captured already (with the first read end seen).
    pipes_with_data: HashSet<u64>,
    /// Files with no name whose contents were captured already.
    unlinked: super::unlinked::Seen,
    /// Named pipes whose buffered bytes were captured already.
    fifos: HashSet<(u64, u64)>,
    /// Epoll instances whose targets are found once every descriptor is in the table.
    epolls: super::events::Pending,
}

impl FileTable {
    /// Complete the table once every member's descriptors are in it: link each epoll
    /// instance's registrations to the open files they watch.
    pub fn finish(&mut self) -> Result<()> {
        let epolls = std::mem::take(&mut self.epolls);
        super::events::link_epolls(epolls, &mut self.files, &self.holders)
    }
}

/// What the members of a job hold, noted by [`list`] before any descriptor is captured: which
/// ends of each pipe (by link target, `(read, write)`), and the sockets.
#[derive(Default)]
pub struct Held {
    pipes: HashMap<String, (bool, bool)>,
    sockets: super::sockets::Held,
}

/// A member's descriptors: `(fd, link target, fdinfo)`, ascending.
pub struct Links(Vec<(i32, String, FdInfo)>);

/// Read the descriptor table of `pid` (to be captured with [`capture`]) and note the pipe ends
/// and sockets it holds in `held`.
pub fn list(pid: Pid, held: &mut Held) -> Result<Links> {
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
        let target = link.to_string_lossy().into_owned();
        let info = fdinfo(pid, fd)?;
        if let Some(ino) = super::sockets::inode(&target) {
            held.sockets.note(ino, pid, fd);
        } else {
            let pipe = if target.starts_with("pipe:") {
                Some(target.clone())
            } else if target.starts_with('/') && info.flags & libc::O_PATH == 0 {
                std::fs::metadata(format!("{dir}/{fd}"))
                    .ok()
                    .filter(|m| m.file_type().is_fifo())
                    .map(|m| super::fifo::key(&m))
            } else {
                None
            };
            if let Some(pipe) = pipe {
                let e = held.pipes.entry(pipe).or_default();
                match info.flags & libc::O_ACCMODE {
                    libc::O_RDONLY => e.0 = true,
                    libc::O_WRONLY => e.1 = true,
                    _ => *e = (true, true),
                }
            }
        }
        links.push((fd, target, info));
    }
    Ok(Links(links))
}

/// The fd table of member `pid`, its open files added to `table`, or a refusal naming the first
/// descriptor that cannot be carried. `held` is what the whole job holds (pipes and socket
/// pairs whose both ends the job holds travel with it).
pub fn capture(
    pid: Pid,
    links: Links,
    held: &Held,
    table: &mut FileTable,
    share_stdio_with: Option<Pid>,
) -> Result<Vec<Fd>> {
    let dir = format!("/proc/{pid}/fd");
    let links = links.0;
    let stdio_targets = stdio_targets(pid, &links, held, share_stdio_with);
    let mut out = Vec::new();
    for (fd, target, info) in links {
        let cloexec = info.flags & libc::O_CLOEXEC != 0;
        let flags = info.flags & !libc::O_CLOEXEC;
        let known = table.holders.iter().position(|(p, f, t)| {
            *t == target && crate::sys::kcmp::same_open_file(*p, *f, pid, fd)
        });
        if let Some(file) = known {
            out.push(Fd {
                fd,
                cloexec,
                file: file as u32,
            });
            continue;
        }
        let kind = if let Some(ino) = super::sockets::inode(&target) {
            super::sockets::capture(pid, fd, ino, flags, &held.sockets)?
        } else if target.starts_with("socket:") {
            return Err(refuse(pid, fd, "a socket"));
        } else if let Some(anon) = target.strip_prefix("anon_inode:") {
            let name = anon.trim_matches(|c| c == '[' || c == ']');
            let file = table.files.len() as u32;
            if let Some(kind) =
                super::events::capture(pid, fd, name, flags, file, &mut table.epolls)?
            {
                table.files.push(kind);
                table.holders.push((pid, fd, target));
                out.push(Fd { fd, cloexec, file });
                continue;
            }
            return Err(refuse(pid, fd, kernel_object(name, &target)));
        } else if let Some(slot) = stdio_targets.get(&target) {
            FdKind::Stdio { slot: *slot }
        } else if target.starts_with("pipe:") {
            if held.pipes.get(target.as_str()) != Some(&(true, true)) && !peer_gone(pid, fd, flags)
            {
                return Err(refuse(pid, fd, SHARED_PIPE));
            }
            capture_pipe(pid, fd, &target, flags, &mut table.pipes_with_data)?
        } else if is_terminal_path(&target) {
            return Err(refuse(
                pid,
                fd,
                format!("a terminal ({target}) that is not stdio"),
            ));
        } else if DEVICES.contains(&target.as_str()) {
            FdKind::Device {
                path: target.clone(),
                flags,
            }
        } else if super::unlinked::is_unlinked(&target) {
            match super::unlinked::capture(pid, fd, &target, flags, info.pos, &mut table.unlinked)?
            {
                Ok(kind) => kind,
                Err(what) => return Err(refuse(pid, fd, what)),
            }
        } else if !target.starts_with('/') {
            return Err(refuse(
                pid,
                fd,
                format!("an unsupported kind of file ({target})"),
            ));
        } else {
            let meta =
                std::fs::metadata(format!("{dir}/{fd}")).ctx(|| format!("stat of {target}"))?;
            let ft = meta.file_type();
            let fifo_end = ft.is_fifo() && flags & libc::O_PATH == 0;
            // An O_PATH descriptor only names a file (a symlink itself with O_NOFOLLOW, a
            // device, a FIFO): it is opened again by path, whatever the file is.
            let only_names = flags & libc::O_PATH != 0;
            if fifo_end && held.pipes.get(&super::fifo::key(&meta)) == Some(&(true, true)) {
                super::fifo::capture(pid, fd, &target, flags, &meta, &mut table.fifos)?
            } else if !(ft.is_file() || ft.is_dir() || only_names) {
                return Err(refuse(pid, fd, special_file(ft, &target)));
            } else {
                FdKind::Path {
                    path: target.clone(),
                    flags,
                    offset: info.pos,
                    identity: super::identity_of(&meta),
                }
            }
        };
        table.files.push(kind);
        table.holders.push((pid, fd, target));
        out.push(Fd {
            fd,
            cloexec,
            file: (table.files.len() - 1) as u32,
        });
    }
    Ok(out)
}

const SHARED_PIPE: &str = "a pipe shared with a process outside the job (not stdio)";

/// The targets of `pid`'s descriptors that travel as stdio streams: pipes and terminals on fds
/// 0-2 (and other fds sharing one of them), and any descriptor that is one of the deputy's
/// stdio open files (a shell keeps a copy of its stdout on fd 10 while a loop's output goes
/// elsewhere), with the stdio slot each stands for.
fn stdio_targets(
    pid: Pid,
    links: &[(i32, String, FdInfo)],
    held: &Held,
    share_stdio_with: Option<Pid>,
) -> HashMap<String, u8> {
    let mut stdio_targets: HashMap<String, u8> = HashMap::new();
    for (fd, target, _) in links {
        // The deputy's own slot first: a terminal's 0, 1 and 2 are often one open file.
        let deputy_slot = share_stdio_with.and_then(|deputy| {
            let order = [*fd, 0, 1, 2];
            order
                .into_iter()
                .filter(|k| (0..=2).contains(k))
                .find(|k| crate::sys::kcmp::same_open_file(pid, *fd, deputy, *k))
        });
        if let Some(slot) = deputy_slot {
            stdio_targets.entry(target.clone()).or_insert(slot as u8);
            continue;
        }
        let job_pipe = held.pipes.get(target.as_str()) == Some(&(true, true));
        if (0..=2).contains(fd)
            && ((target.starts_with("pipe:") && !job_pipe) || is_terminal_path(target))
        {
            stdio_targets.entry(target.clone()).or_insert(*fd as u8);
        }
    }
    stdio_targets
}

/// What an `anon_inode:[NAME]` descriptor that is no event object is, for its refusal.
fn kernel_object(name: &str, target: &str) -> String {
    match name {
        "io_uring" => "an io_uring instance".into(),
        "pidfd" => "a pidfd".into(),
        _ => format!("an unsupported kernel object ({target})"),
    }
}

/// What a file that is neither a regular file nor a directory is, for its refusal.
fn special_file(ft: std::fs::FileType, target: &str) -> String {
    let what = if ft.is_fifo() {
        "a named pipe shared with a process outside the job"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "a special file"
    };
    format!("{what} ({target})")
}

/// What [`capture`] would refuse of member `pid`'s descriptors, told from their links, kinds
/// and peers alone: nothing is copied but a socket's descriptor (to ask its family), nothing
/// of the job is stopped (see `engine::predict`). What depends on contents (a file with no
/// name too large, unread inotify events, a listener's waiting connections) only a capture
/// finds.
pub fn predict(pid: Pid, links: &Links, held: &Held, share_stdio_with: Option<Pid>) -> Result<()> {
    let stdio = stdio_targets(pid, &links.0, held, share_stdio_with);
    for (fd, target, info) in &links.0 {
        let (fd, flags) = (*fd, info.flags & !libc::O_CLOEXEC);
        if let Some(ino) = super::sockets::inode(target) {
            super::sockets::predict(pid, fd, ino, &held.sockets)?;
        } else if target.starts_with("socket:") {
            return Err(refuse(pid, fd, "a socket"));
        } else if let Some(anon) = target.strip_prefix("anon_inode:") {
            let name = anon.trim_matches(|c| c == '[' || c == ']');
            if super::events::what_is(name).is_none() {
                return Err(refuse(pid, fd, kernel_object(name, target)));
            }
        } else if stdio.contains_key(target) || DEVICES.contains(&target.as_str()) {
        } else if target.starts_with("pipe:") {
            if held.pipes.get(target.as_str()) != Some(&(true, true)) && !peer_gone(pid, fd, flags)
            {
                return Err(refuse(pid, fd, SHARED_PIPE));
            }
        } else if is_terminal_path(target) {
            return Err(refuse(
                pid,
                fd,
                format!("a terminal ({target}) that is not stdio"),
            ));
        } else if super::unlinked::is_unlinked(target) {
        } else if !target.starts_with('/') {
            return Err(refuse(
                pid,
                fd,
                format!("an unsupported kind of file ({target})"),
            ));
        } else if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            let ft = meta.file_type();
            let fifo_end = ft.is_fifo() && flags & libc::O_PATH == 0;
            let job_fifo =
                fifo_end && held.pipes.get(&super::fifo::key(&meta)) == Some(&(true, true));
            let only_names = flags & libc::O_PATH != 0;
            if !(job_fifo || ft.is_file() || ft.is_dir() || only_names) {
                return Err(refuse(pid, fd, special_file(ft, target)));
            }
        }
    }
    Ok(())
}

/// Whether the other side of the pipe end `fd` of `pid` is closed everywhere (a worker that
/// exited after writing its result): then the pipe is the job's alone, though the job holds
/// only this end.
fn peer_gone(pid: Pid, fd: i32, flags: i32) -> bool {
    let write_end = flags & libc::O_ACCMODE != libc::O_RDONLY;
    crate::sys::pidfd::get_fd(pid, fd)
        .map(|end| crate::sys::pidfd::pipe_peer_gone(&end, write_end))
        .unwrap_or(false)
}

/// One end of a pipe inside the job. The first read end seen carries the buffered bytes,
/// copied with tee(2) so the process's pipe keeps them.
fn capture_pipe(
    pid: Pid,
    fd: i32,
    target: &str,
    flags: i32,
    with_data: &mut HashSet<u64>,
) -> Result<FdKind> {
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
    let data = if write_end || !with_data.insert(id) {
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
    /// The descriptor of this process that stands for each open file of the image.
    pub sources: Vec<RawFd>,
    /// Timerfds, to be armed when the processes are about to run.
    pub timers: super::events::Timers,
}

impl Prepared {
    /// `(target fd, source fd here)` for a member's descriptor table.
    pub fn plan(&self, fds: &[Fd]) -> Vec<(RawFd, RawFd)> {
        fds.iter()
            .map(|f| {
                (
                    f.fd,
                    self.sources.get(f.file as usize).copied().unwrap_or(-1),
                )
            })
            .collect()
    }
}

/// Open every file of the image in this process, once each (members that shared an open file
/// share it again). `stdio[k]` is the fd that stands in for the original process's stdio slot k
/// (pipes and terminals). `made` are the shared memory files this restore made again (their
/// descriptors open the new file).
pub fn prepare(
    files: &[FdKind],
    stdio: [RawFd; 3],
    same_machine: bool,
    made: &mut super::made_files::MadeFiles,
) -> Result<Prepared> {
    let mut p = Prepared {
        opened: Vec::new(),
        sources: Vec::new(),
        timers: Default::default(),
    };
    let pipes = make_pipes(files)?;
    // Pipe ends already given to an open file of the image: another open file of the same end
    // (the pipe opened again through /proc) is a description of its own, with its own flags.
    let mut ends_used: HashSet<(u64, bool)> = HashSet::new();
    let mut listeners = super::listeners::create(files, same_machine, made)?;
    let mut pairs = super::sockets::create_pairs(files, &listeners)?;
    let mut unlinked = super::unlinked::Made::default();
    let mut fifos = super::fifo::Held::default();
    for kind in files {
        let source = match kind {
            FdKind::Stdio { slot } => stdio.get(*slot as usize).copied().unwrap_or(-1),
            FdKind::Pipe {
                id,
                write_end,
                flags,
                ..
            } => {
                let Some((r, w)) = pipes.get(id) else {
                    return Err(EngineError::Unrestorable(format!("pipe {id} was not made")));
                };
                let first = if *write_end { w } else { r };
                let end = if ends_used.insert((*id, *write_end)) {
                    first.as_raw_fd()
                } else {
                    let again = crate::sys::pipe::reopen(first.as_fd(), *write_end)
                        .ctx(|| format!("opening pipe {id} again"))?;
                    let raw = again.as_raw_fd();
                    p.opened.push(again);
                    raw
                };
                crate::sys::pipe::set_status_flags(end, *flags)
                    .ctx(|| "setting pipe flags".into())?;
                end
            }
            FdKind::Fifo { .. } => {
                let fd = super::fifo::open(kind, same_machine, &mut fifos)?;
                let raw = fd.as_raw_fd();
                p.opened.push(fd);
                raw
            }
            FdKind::Unlinked { .. } => {
                let fd = super::unlinked::open(kind, &mut unlinked)?;
                let raw = fd.as_raw_fd();
                p.opened.push(fd);
                raw
            }
            FdKind::SocketPair { id, end, .. } => {
                let fd = pairs.take(*id, *end)?;
                let raw = fd.as_raw_fd();
                p.opened.push(fd);
                raw
            }
            FdKind::UnixListener { name, .. } => {
                let fd = listeners.take(name)?;
                let raw = fd.as_raw_fd();
                p.opened.push(fd);
                raw
            }
            FdKind::EventFd { .. }
            | FdKind::TimerFd { .. }
            | FdKind::SignalFd { .. }
            | FdKind::Epoll { .. }
            | FdKind::Inotify { .. } => {
                let made = super::events::make(kind, same_machine, &mut p.timers)?;
                let fd = made.ok_or_else(|| {
                    EngineError::Unrestorable("an event object that cannot be made".into())
                })?;
                let raw = fd.as_raw_fd();
                p.opened.push(fd);
                raw
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
                let same = made.contains(path)
                    || super::same_file(identity, &meta, same_machine, reads_only);
                if !same {
                    return Err(EngineError::Unrestorable(format!(
                        "{path} changed since the checkpoint; restoring would give wrong results"
                    )));
                }
                // A directory too: a listing read part way goes on where it stopped.
                if *offset != 0 {
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
        p.sources.push(source);
    }
    // Both ends of every pipe stay open until the processes have theirs (an end no process
    // holds closes then, as it was closed).
    for (r, w) in pipes.into_values() {
        p.opened.push(r);
        p.opened.push(w);
    }
    p.opened.extend(fifos.into_fds());
    // Every open file exists: register what epoll instances watch.
    super::events::fill_epolls(files, &p.sources)?;
    Ok(p)
}

/// Every pipe of the image, made once (`(read, write)` by id) with the capacity it had and
/// refilled with what waited in it, before any end is given its flags (a write end made
/// non-blocking first must not make the refill fail half way).
fn make_pipes(files: &[FdKind]) -> Result<HashMap<u64, (OwnedFd, OwnedFd)>> {
    let mut pipes = HashMap::new();
    for kind in files {
        let FdKind::Pipe { id, size, data, .. } = kind else {
            continue;
        };
        if !pipes.contains_key(id) {
            let made = crate::sys::pipe::create(*size).ctx(|| "creating a pipe".into())?;
            pipes.insert(*id, made);
        }
        if data.is_empty() {
            continue;
        }
        let Some((_, w)) = pipes.get(id) else {
            continue;
        };
        let room = crate::sys::pipe::make_room(w.as_fd(), data.len())
            .ctx(|| format!("making room for the {} bytes of a pipe", data.len()))?;
        if room < data.len() {
            return Err(EngineError::Unrestorable(format!(
                "a pipe of the job held {} bytes, but a pipe here holds at most {room} for this \
                 user (see /proc/sys/fs/pipe-max-size and pipe-user-pages-soft)",
                data.len()
            )));
        }
        crate::sys::pipe::fill(w.as_raw_fd(), data).ctx(|| "refilling a pipe".into())?;
    }
    Ok(pipes)
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

#[cfg(test)]
mod tests {
    use super::parse_fdinfo;

    #[test]
    fn fdinfo_fields() {
        let info = parse_fdinfo("pos:\t37\nflags:\t02100002\nmnt_id:\t30\nino:\t12\n")
            .expect("a valid fdinfo");
        assert_eq!(info.pos, 37);
        assert_eq!(info.flags, 0o2100002);
        let hash = parse_fdinfo("pos:\t-2\nflags:\t0100000\n").expect("a negative pos");
        assert_eq!(hash.pos, u64::MAX - 1);
        assert!(parse_fdinfo("pos:\t0\n").is_none(), "flags missing");
        assert!(
            parse_fdinfo("pos:\t0\nflags:\tbogus\n").is_none(),
            "flags unparsed"
        );
    }
}
