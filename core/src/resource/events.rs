//! Event objects, the descriptors an event loop holds: eventfd (counter, semaphore mode),
//! timerfd (clock, time left, interval, unread expirations), signalfd (mask), epoll (the interest
//! list, each target one of the job's open files) and inotify (each watch by path, with its
//! mask and watch descriptor). Captured from `/proc/PID/fdinfo` and a pidfd_getfd copy of the
//! frozen process's descriptor; made again by the restorer before the processes are forked, so
//! every process inherits them. Timers are armed last, just before the processes run, so a
//! deadline stays the same distance ahead of the process whatever the restore took. Never
//! consumes what the process has not read: a counter or unread expirations are read from
//! fdinfo, inotify events waiting to be read are refused.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use super::fds::{fdinfo_field as field, refuse};
use crate::engine::error::{Context, EngineError, Result};
use crate::image::model::{EpollItem, FdKind, InotifyWatch};
use crate::sys::events::{self as sys, EpollAdd};
use crate::sys::Pid;

/// The most watch descriptors an inotify instance's watches may skip over (each skipped one
/// costs an add and a removal at restore).
const MAX_WD: i32 = 1 << 16;

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// The `key:value` words of an fdinfo line (`tfd: 5 events: 19 ...` or `wd:1 ino:3c ...`).
fn words(line: &str) -> HashMap<&str, &str> {
    let mut out = HashMap::new();
    let mut key: Option<&str> = None;
    for w in line.split_whitespace() {
        match (w.split_once(':'), key.take()) {
            (Some((k, "")), _) => key = Some(k),
            (Some((k, v)), _) => {
                out.insert(k, v);
            }
            (None, Some(k)) => {
                out.insert(k, w);
            }
            (None, None) => {}
        }
    }
    out
}

/// An epoll registration as fdinfo shows it, its target not yet found among the job's files.
struct RawItem {
    tfd: i32,
    /// How many registrations under the same number the fdinfo listed before this one.
    toff: u32,
    events: u32,
    data: u64,
    ino: u64,
}

/// An epoll instance captured, its items linked to the job's files once every member's
/// descriptors are known ([`link_epolls`]).
struct RawEpoll {
    pid: Pid,
    fd: i32,
    file: u32,
    items: Vec<RawItem>,
}

/// What [`capture`] leaves for [`link_epolls`].
#[derive(Default)]
pub struct Pending(Vec<RawEpoll>);

/// The event object an `anon_inode:[NAME]` descriptor is, in words, if it is one carried here.
pub fn what_is(name: &str) -> Option<&'static str> {
    match name {
        "eventfd" => Some("an eventfd"),
        "timerfd" => Some("a timerfd"),
        "signalfd" => Some("a signalfd"),
        "eventpoll" => Some("an epoll instance"),
        "inotify" => Some("an inotify instance"),
        _ => None,
    }
}

/// The event object on `fd` of `pid` (link target `anon_inode:[name]`, status `flags`), which
/// is to be the open file number `file` of the job; `None` when `name` is not one.
pub fn capture(
    pid: Pid,
    fd: i32,
    name: &str,
    flags: i32,
    file: u32,
    pending: &mut Pending,
) -> Result<Option<FdKind>> {
    let Some(what) = what_is(name) else {
        return Ok(None);
    };
    let copy = || {
        crate::sys::pidfd::get_fd(pid, fd).ctx(|| format!("copying fd {fd} of pid {pid} ({what})"))
    };
    // A timerfd is brought up to date before its fdinfo is read (see `timerfd_gettime`).
    let timer = if name == "timerfd" {
        let copy = copy()?;
        Some(
            sys::timerfd_gettime(copy.as_fd())
                .ctx(|| format!("timerfd_gettime of fd {fd} of pid {pid}"))?,
        )
    } else {
        None
    };
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    let unreadable =
        || EngineError::Unrestorable(format!("cannot understand {path} ({what}):\n{text}"));
    let kind = match name {
        "eventfd" => {
            let count = field(&text, "eventfd-count")
                .and_then(hex)
                .ok_or_else(unreadable)?;
            let semaphore = match field(&text, "eventfd-semaphore") {
                Some(s) => s == "1",
                // Kernels before 6.4 do not show it: ask the eventfd itself.
                None => {
                    let copy = copy()?;
                    let raw = copy.as_raw_fd();
                    crate::sys::pipe::set_status_flags(raw, flags | libc::O_NONBLOCK)
                        .ctx(|| format!("making fd {fd} of pid {pid} non-blocking"))?;
                    let probed = sys::eventfd_is_semaphore(copy.as_fd(), count);
                    crate::sys::pipe::set_status_flags(raw, flags)
                        .ctx(|| format!("setting the flags of fd {fd} of pid {pid} back"))?;
                    probed.ctx(|| {
                        format!("telling the mode of the eventfd on fd {fd} of pid {pid}")
                    })?
                }
            };
            FdKind::EventFd {
                count,
                semaphore,
                flags,
            }
        }
        "timerfd" => {
            let (remaining_ns, interval_ns) = timer.unwrap_or((0, 0));
            let clock: i32 = field(&text, "clockid")
                .and_then(|s| s.parse().ok())
                .ok_or_else(unreadable)?;
            let ticks: u64 = field(&text, "ticks")
                .and_then(|s| s.parse().ok())
                .ok_or_else(unreadable)?;
            let settime_flags = field(&text, "settime flags")
                .and_then(|s| i32::from_str_radix(s, 8).ok())
                .ok_or_else(unreadable)?;
            let absolute_realtime = settime_flags & libc::TFD_TIMER_ABSTIME != 0
                && (clock == libc::CLOCK_REALTIME || clock == libc::CLOCK_REALTIME_ALARM);
            let deadline_ns = if absolute_realtime && remaining_ns > 0 {
                let now =
                    sys::now_ns(libc::CLOCK_REALTIME).ctx(|| "reading CLOCK_REALTIME".into())?;
                Some(now.saturating_add(remaining_ns))
            } else {
                None
            };
            FdKind::TimerFd {
                clock,
                flags,
                settime_flags,
                remaining_ns,
                interval_ns,
                deadline_ns,
                ticks,
            }
        }
        "signalfd" => FdKind::SignalFd {
            mask: field(&text, "sigmask")
                .and_then(hex)
                .ok_or_else(unreadable)?,
            flags,
        },
        "eventpoll" => {
            let mut items: Vec<RawItem> = Vec::new();
            for line in text.lines().filter(|l| l.starts_with("tfd:")) {
                let w = words(line);
                let item = (|| {
                    let tfd: i32 = w.get("tfd")?.parse().ok()?;
                    Some(RawItem {
                        tfd,
                        toff: items.iter().filter(|i| i.tfd == tfd).count() as u32,
                        events: hex(w.get("events")?)? as u32,
                        data: hex(w.get("data")?)?,
                        ino: hex(w.get("ino")?)?,
                    })
                })()
                .ok_or_else(unreadable)?;
                items.push(item);
            }
            pending.0.push(RawEpoll {
                pid,
                fd,
                file,
                items,
            });
            FdKind::Epoll {
                flags,
                items: Vec::new(),
            }
        }
        _ => {
            let copy = copy()?;
            let queued = sys::queued_bytes(copy.as_fd())
                .ctx(|| format!("FIONREAD of fd {fd} of pid {pid} (an inotify instance)"))?;
            if queued > 0 {
                return Err(refuse(
                    pid,
                    fd,
                    format!("an inotify instance with {queued} bytes of events not read yet"),
                ));
            }
            let watches = inotify_watches(pid, &text).map_err(|e| match e {
                WatchError::Unreadable => unreadable(),
                WatchError::NoPath { wd, ino, dev } => refuse(
                    pid,
                    fd,
                    format!(
                        "an inotify instance watching (wd {wd}) inode {ino} of device {}:{}, \
                         whose path cannot be found from the job's files and directories",
                        libc::major(dev),
                        libc::minor(dev)
                    ),
                ),
                WatchError::TooHigh(wd) => refuse(
                    pid,
                    fd,
                    format!("an inotify instance with watch descriptor {wd} (more than {MAX_WD})"),
                ),
            })?;
            FdKind::Inotify { flags, watches }
        }
    };
    Ok(Some(kind))
}

enum WatchError {
    Unreadable,
    NoPath { wd: i32, ino: u64, dev: u64 },
    TooHigh(i32),
}

/// The watches of an inotify instance of `pid` (fdinfo `text`), each with a path that
/// names the watched inode now.
fn inotify_watches(pid: Pid, text: &str) -> std::result::Result<Vec<InotifyWatch>, WatchError> {
    let mut found = Vec::new();
    let mut places: Option<Vec<String>> = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("inotify ") else {
            continue;
        };
        let w = words(rest);
        let get = |k: &str| w.get(k).and_then(|v| hex(v)).ok_or(WatchError::Unreadable);
        let wd = get("wd")? as i32;
        let ino = get("ino")?;
        let sdev = get("sdev")?;
        let mask = get("mask")? as u32;
        if wd > MAX_WD {
            return Err(WatchError::TooHigh(wd));
        }
        // The kernel's dev_t is major << 20 | minor.
        let dev = libc::makedev((sdev >> 20) as u32, (sdev & 0xf_ffff) as u32);
        let places = places.get_or_insert_with(|| candidate_paths(pid));
        let hit = places.iter().find_map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            (meta.ino() == ino && meta.dev() == dev).then(|| (p.clone(), meta))
        });
        let Some((path, meta)) = hit else {
            return Err(WatchError::NoPath { wd, ino, dev });
        };
        found.push(InotifyWatch {
            wd,
            path,
            mask,
            identity: super::identity_of(&meta),
        });
    }
    found.sort_by_key(|w| w.wd);
    Ok(found)
}

/// Paths a watch of `pid` may be on: its working and root directories, the files it has open
/// and maps, and their directories, each with what those directories hold.
fn candidate_paths(pid: Pid) -> Vec<String> {
    let mut seeds: Vec<String> = Vec::new();
    for link in ["cwd", "root", "exe"] {
        if let Ok(p) = std::fs::read_link(format!("/proc/{pid}/{link}")) {
            seeds.push(p.to_string_lossy().into_owned());
        }
    }
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in dir.flatten() {
            if let Ok(p) = std::fs::read_link(e.path()) {
                seeds.push(p.to_string_lossy().into_owned());
            }
        }
    }
    if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        seeds.extend(
            maps.lines()
                .filter_map(|l| l.find(" /").map(|i| l[i + 1..].to_string())),
        );
    }
    let mut dirs: Vec<String> = Vec::new();
    let mut out: Vec<String> = Vec::new();
    for s in seeds
        .into_iter()
        .filter(|s| s.starts_with('/') && !s.ends_with(" (deleted)"))
    {
        let mut p = std::path::PathBuf::from(&s);
        if p.is_dir() {
            dirs.push(s.clone());
        }
        out.push(s);
        while let Some(parent) = p.parent().map(std::path::Path::to_path_buf) {
            dirs.push(parent.to_string_lossy().into_owned());
            p = parent;
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        if let Ok(entries) = std::fs::read_dir(d) {
            out.extend(
                entries
                    .flatten()
                    .map(|e| e.path().to_string_lossy().into_owned()),
            );
        }
    }
    out.extend(dirs);
    out.sort();
    out.dedup();
    out
}

/// Find the open file each epoll registration of `pending` watches among the job's open files
/// (`holders[k]` is a descriptor `(pid, fd, link target)` holding `files[k]`), or refuse the
/// epoll instance that watches a file the job does not hold.
pub fn link_epolls(
    pending: Pending,
    files: &mut [FdKind],
    holders: &[(Pid, i32, String)],
) -> Result<()> {
    if pending.0.is_empty() {
        return Ok(());
    }
    // The job's open files by inode (epoll's fdinfo tells the target's inode; many anonymous
    // objects share one, kcmp tells them apart).
    let mut by_ino: HashMap<u64, Vec<usize>> = HashMap::new();
    for (k, (pid, fd, _)) in holders.iter().enumerate() {
        if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
            by_ino.entry(meta.ino()).or_default().push(k);
        }
    }
    for ep in pending.0 {
        let mut items = Vec::with_capacity(ep.items.len());
        for item in &ep.items {
            let target = by_ino.get(&item.ino).and_then(|ks| {
                ks.iter().copied().find(|k| {
                    holders.get(*k).is_some_and(|(pid, fd, _)| {
                        crate::sys::kcmp::is_epoll_target(
                            *pid, *fd, ep.pid, ep.fd, item.tfd, item.toff,
                        )
                    })
                })
            });
            let Some(target) = target else {
                return Err(refuse(
                    ep.pid,
                    ep.fd,
                    format!(
                        "an epoll instance watching fd {} (inode {}), an open file no process \
                         of the job holds",
                        item.tfd, item.ino
                    ),
                ));
            };
            items.push(EpollItem {
                fd: item.tfd,
                file: target as u32,
                events: item.events,
                data: item.data,
            });
        }
        if let Some(FdKind::Epoll { items: slot, .. }) = files.get_mut(ep.file as usize) {
            *slot = items;
        }
    }
    Ok(())
}

/// Timers made by [`make`], armed by [`Timers::arm`] when the processes are about to run.
#[derive(Default)]
pub struct Timers(Vec<(OwnedFd, Arm)>);

struct Arm {
    clock: i32,
    settime_flags: i32,
    remaining_ns: u64,
    interval_ns: u64,
    deadline_ns: Option<u64>,
    ticks: u64,
}

impl Timers {
    /// Arm every timer: an absolute realtime deadline as it was, every other armed timer with
    /// the time it had left; then give each the expirations it held unread.
    pub fn arm(self) -> Result<()> {
        for (fd, a) in self.0 {
            let fd = fd.as_fd();
            if let Some(deadline) = a.deadline_ns {
                sys::timerfd_settime(fd, a.settime_flags, deadline, a.interval_ns)
            } else if a.remaining_ns > 0 {
                sys::timerfd_settime(fd, 0, a.remaining_ns, a.interval_ns)
            } else {
                Ok(())
            }
            .ctx(|| format!("arming a timerfd on clock {}", a.clock))?;
            if a.ticks > 0 {
                sys::timerfd_set_ticks(fd, a.ticks).map_err(|e| {
                    EngineError::Unrestorable(format!(
                        "cannot give a timerfd its {} expirations not read yet \
                         (TFD_IOC_SET_TICKS: {e}; a kernel without CONFIG_CHECKPOINT_RESTORE?)",
                        a.ticks
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// Make the event object `kind` (an epoll instance still empty: see [`fill_epolls`]; a timerfd
/// disarmed, noted in `timers`), or `None` when `kind` is not one.
pub fn make(kind: &FdKind, same_machine: bool, timers: &mut Timers) -> Result<Option<OwnedFd>> {
    let fd = match kind {
        FdKind::EventFd {
            count,
            semaphore,
            flags,
        } => sys::eventfd(*count, *semaphore, *flags).ctx(|| "creating an eventfd".into())?,
        FdKind::TimerFd {
            clock,
            flags,
            settime_flags,
            remaining_ns,
            interval_ns,
            deadline_ns,
            ticks,
        } => {
            let fd = sys::timerfd(*clock, *flags)
                .ctx(|| format!("creating a timerfd on clock {clock}"))?;
            let arm = Arm {
                clock: *clock,
                settime_flags: *settime_flags,
                remaining_ns: *remaining_ns,
                interval_ns: *interval_ns,
                deadline_ns: *deadline_ns,
                ticks: *ticks,
            };
            timers
                .0
                .push((fd.try_clone().ctx(|| "duplicating a timerfd".into())?, arm));
            fd
        }
        FdKind::SignalFd { mask, flags } => {
            sys::signalfd(*mask, *flags).ctx(|| "creating a signalfd".into())?
        }
        FdKind::Epoll { flags, .. } => {
            let fd = sys::epoll().ctx(|| "creating an epoll instance".into())?;
            crate::sys::pipe::set_status_flags(fd.as_raw_fd(), *flags)
                .ctx(|| "setting epoll flags".into())?;
            fd
        }
        FdKind::Inotify { flags, watches } => make_inotify(*flags, watches, same_machine)?,
        _ => return Ok(None),
    };
    Ok(Some(fd))
}

/// An inotify instance with `watches` (ascending watch descriptors), each under its own
/// watch descriptor: descriptors are handed out in increasing order, so a gap is skipped by
/// adding and removing a watch; the events those removals queue are read away.
fn make_inotify(flags: i32, watches: &[InotifyWatch], same_machine: bool) -> Result<OwnedFd> {
    let fd = sys::inotify().ctx(|| "creating an inotify instance".into())?;
    let ino = fd.as_fd();
    crate::sys::pipe::set_status_flags(fd.as_raw_fd(), libc::O_NONBLOCK)
        .ctx(|| "setting inotify flags".into())?;
    let mut next = 1;
    for w in watches {
        let path = CString::new(w.path.as_str())
            .map_err(|_| EngineError::Unrestorable(format!("an inotify watch on {:?}", w.path)))?;
        let meta = std::fs::metadata(&w.path).map_err(|e| {
            EngineError::Unrestorable(format!("cannot watch {} again: {e}", w.path))
        })?;
        if same_machine && (meta.dev() != w.identity.dev || meta.ino() != w.identity.ino) {
            return Err(EngineError::Unrestorable(format!(
                "{} is not the file an inotify watch was on at the checkpoint",
                w.path
            )));
        }
        while next < w.wd {
            // A directory no process of the job watches: this restorer's own in /proc.
            let skipped = sys::inotify_add_watch(ino, c"/proc/self", libc::IN_ACCESS)
                .ctx(|| "skipping an inotify watch descriptor".into())?;
            sys::inotify_rm_watch(ino, skipped)
                .ctx(|| "skipping an inotify watch descriptor".into())?;
            next = skipped + 1;
        }
        let wd = sys::inotify_add_watch(ino, &path, w.mask).map_err(|e| {
            EngineError::Unrestorable(format!("cannot watch {} again: {e}", w.path))
        })?;
        if wd != w.wd {
            return Err(EngineError::Unrestorable(format!(
                "the inotify watch on {} came back as watch descriptor {wd}, not {}",
                w.path, w.wd
            )));
        }
        next = wd + 1;
    }
    // The skipped watches' IN_IGNORED events, read away (until EAGAIN).
    let mut reader = std::fs::File::from(
        fd.try_clone()
            .ctx(|| "duplicating an inotify instance".into())?,
    );
    let mut buf = vec![0u8; 64 << 10];
    while matches!(std::io::Read::read(&mut reader, &mut buf), Ok(n) if n > 0) {}
    crate::sys::pipe::set_status_flags(fd.as_raw_fd(), flags)
        .ctx(|| "setting inotify flags".into())?;
    Ok(fd)
}

/// Register the items of every epoll instance of `files` (`sources[k]` is our descriptor for
/// `files[k]`), now that every open file exists.
pub fn fill_epolls(files: &[FdKind], sources: &[RawFd]) -> Result<()> {
    let mut adds = Vec::new();
    for (k, kind) in files.iter().enumerate() {
        let FdKind::Epoll { items, .. } = kind else {
            continue;
        };
        let epoll = sources.get(k).copied().unwrap_or(-1);
        for item in items {
            let source = sources.get(item.file as usize).copied().unwrap_or(-1);
            if epoll < 0 || source < 0 {
                return Err(EngineError::Unrestorable(format!(
                    "an epoll instance watches fd {} whose open file the image does not hold",
                    item.fd
                )));
            }
            adds.push(EpollAdd {
                epoll,
                source,
                fd: item.fd,
                events: item.events,
                data: item.data,
            });
        }
    }
    sys::epoll_add_all(&adds).map_err(|(i, e)| EngineError::Os {
        what: match adds.get(i) {
            Some(a) => format!("registering fd {} with a restored epoll instance", a.fd),
            None => "registering epoll targets".into(),
        },
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_lines_split_into_words() {
        let w =
            words("tfd:        8 events: 80000019 data:             1234  pos:0 ino:f4546 sdev:f");
        assert_eq!(w.get("tfd"), Some(&"8"));
        assert_eq!(w.get("events"), Some(&"80000019"));
        assert_eq!(w.get("data"), Some(&"1234"));
        assert_eq!(w.get("ino"), Some(&"f4546"));
        let w = words("wd:2 ino:124035 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8");
        assert_eq!(w.get("wd"), Some(&"2"));
        assert_eq!(w.get("sdev"), Some(&"fe00000"));
    }

    #[test]
    fn fdinfo_fields_are_found() {
        let text =
            "pos:\t0\nflags:\t04002\neventfd-count:               14\neventfd-semaphore: 1\n";
        assert_eq!(field(text, "eventfd-count").and_then(hex), Some(20));
        assert_eq!(field(text, "eventfd-semaphore"), Some("1"));
        let t = "clockid: 1\nticks: 0\nsettime flags: 01\nit_value: (1, 999989985)\n";
        assert_eq!(field(t, "settime flags"), Some("01"));
    }
}
