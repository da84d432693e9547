//! Event objects: eventfd, timerfd (settime, gettime, TFD_IOC_SET_TICKS), signalfd, epoll and
//! inotify, created anew for a restore; and the one place that registers epoll targets under
//! the descriptor numbers the process knew them by (a forked helper with its own fd table).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::last_err;

/// `_IOW('T', 0, __u64)`: set the expirations a timerfd has not yet been read for (Linux 3.17,
/// CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

fn owned(r: libc::c_int) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(last_err());
    }
    // SAFETY: the call that returned `r` made a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn zero_or_err(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(last_err())
    } else {
        Ok(())
    }
}

fn nonblock(flags: i32) -> libc::c_int {
    flags & libc::O_NONBLOCK
}

/// A new eventfd holding `count`, close-on-exec, semaphore mode if asked, with the status
/// flags `flags` (`O_NONBLOCK`).
pub fn eventfd(count: u64, semaphore: bool, flags: i32) -> io::Result<OwnedFd> {
    let sem = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    // SAFETY: eventfd takes integers.
    let fd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK | sem) })?;
    if count > 0 {
        // The initial value is only 32 bits wide; a write adds the whole 64-bit count.
        let bytes = count.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to a descriptor we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n != bytes.len() as isize {
            return Err(last_err());
        }
    }
    super::pipe::set_status_flags(fd.as_raw_fd(), nonblock(flags))?;
    Ok(fd)
}

/// Whether the eventfd `fd` is in semaphore mode, told by how it reads (for kernels whose
/// fdinfo does not show it), its counter `count` left as it was. Its status flags must be
/// `O_NONBLOCK` while this runs.
pub fn eventfd_is_semaphore(fd: BorrowedFd, count: u64) -> io::Result<bool> {
    let raw = fd.as_raw_fd();
    let add = |v: u64| -> io::Result<()> {
        if v == 0 {
            return Ok(());
        }
        let b = v.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer.
        let n = unsafe { libc::write(raw, b.as_ptr().cast(), b.len()) };
        if n == b.len() as isize {
            Ok(())
        } else {
            Err(last_err())
        }
    };
    let take = || -> io::Result<u64> {
        let mut b = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a valid buffer.
        let n = unsafe { libc::read(raw, b.as_mut_ptr().cast(), b.len()) };
        if n == b.len() as isize {
            Ok(u64::from_ne_bytes(b))
        } else {
            Err(last_err())
        }
    };
    // With at least 2 in it, a read takes 1 in semaphore mode, everything otherwise.
    let extra = 2u64.saturating_sub(count);
    add(extra)?;
    let got = take()?;
    let semaphore = got == 1;
    if semaphore {
        // count + extra - 1 left: take back what was added.
        for _ in 1..extra {
            take()?;
        }
        if extra == 0 {
            add(1)?;
        }
    } else {
        add(count)?;
    }
    Ok(semaphore)
}

/// A new timerfd on `clock`, close-on-exec, disarmed, with status flags `flags`.
pub fn timerfd(clock: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes integers.
    let fd = owned(unsafe { libc::timerfd_create(clock, libc::TFD_CLOEXEC) })?;
    super::pipe::set_status_flags(fd.as_raw_fd(), nonblock(flags))?;
    Ok(fd)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

fn nanos(t: &libc::timespec) -> u64 {
    (t.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec.max(0) as u64)
}

/// Arm timerfd `fd`: first expiry at `value_ns` (relative, or on the clock's absolute scale
/// with `TFD_TIMER_ABSTIME` in `flags`), then every `interval_ns`.
pub fn timerfd_settime(
    fd: BorrowedFd,
    flags: i32,
    value_ns: u64,
    interval_ns: u64,
) -> io::Result<()> {
    let new = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: a valid itimerspec in, no old value asked for.
    zero_or_err(unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &new, std::ptr::null_mut()) })
}

/// `(time left until the next expiry, interval)` of timerfd `fd`, in ns. Asking brings an
/// interval timer that expired up to date (its missed expirations are added to its ticks
/// and it is armed for the next), as a read would, without consuming anything.
pub fn timerfd_gettime(fd: BorrowedFd) -> io::Result<(u64, u64)> {
    let mut cur = libc::itimerspec {
        it_interval: timespec(0),
        it_value: timespec(0),
    };
    // SAFETY: a valid itimerspec out.
    zero_or_err(unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut cur) })?;
    Ok((nanos(&cur.it_value), nanos(&cur.it_interval)))
}

/// Set the expirations timerfd `fd` holds unread (`ticks` > 0).
pub fn timerfd_set_ticks(fd: BorrowedFd, ticks: u64) -> io::Result<()> {
    // SAFETY: TFD_IOC_SET_TICKS reads one u64 from a valid pointer.
    zero_or_err(unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks) })
}

/// The current time of `clock`, ns.
pub fn now_ns(clock: libc::clockid_t) -> io::Result<u64> {
    let mut t = timespec(0);
    // SAFETY: a valid timespec out.
    zero_or_err(unsafe { libc::clock_gettime(clock, &mut t) })?;
    Ok(nanos(&t))
}

/// A new signalfd for the signals in `mask` (bit n-1 for signal n), close-on-exec, with status
/// flags `flags`.
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sigset_t is an empty set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for signo in 1..=64 {
        if mask & (1u64 << (signo - 1)) != 0 {
            // SAFETY: `set` is a valid sigset_t; an invalid number fails without harm.
            unsafe { libc::sigaddset(&mut set, signo) };
        }
    }
    // SAFETY: a valid sigset_t; -1 asks for a new descriptor.
    let fd = owned(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) })?;
    super::pipe::set_status_flags(fd.as_raw_fd(), nonblock(flags))?;
    Ok(fd)
}

/// A new epoll instance, close-on-exec, with status flags `flags`.
pub fn epoll() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes an integer.
    owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
}

/// A new inotify instance, close-on-exec.
pub fn inotify() -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes an integer.
    owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) })
}

/// Add a watch for `path` to inotify `fd`; its watch descriptor.
pub fn inotify_add_watch(fd: BorrowedFd, path: &std::ffi::CStr, mask: u32) -> io::Result<i32> {
    // SAFETY: a valid C string.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    if wd < 0 {
        Err(last_err())
    } else {
        Ok(wd)
    }
}

/// Remove watch `wd` from inotify `fd`.
pub fn inotify_rm_watch(fd: BorrowedFd, wd: i32) -> io::Result<()> {
    // SAFETY: integers only.
    zero_or_err(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) })
}

/// Bytes waiting to be read on `fd` (FIONREAD).
pub fn queued_bytes(fd: BorrowedFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    zero_or_err(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// One registration to make: in epoll `epoll` (a descriptor of ours), the open file on our
/// descriptor `source`, under the number `fd` the process knows it by.
#[derive(Debug, Clone, Copy)]
pub struct EpollAdd {
    pub epoll: RawFd,
    pub source: RawFd,
    pub fd: RawFd,
    pub events: u32,
    pub data: u64,
}

/// Register every `adds` with `EPOLL_CTL_ADD`. An epoll item is keyed by its file and the
/// descriptor number it was added under (the process's later `EPOLL_CTL_MOD`/`DEL` look it up
/// by that number), so each target must sit at its original number while it is added. That
/// happens in a forked helper whose descriptor table is a copy of ours: the epoll instances
/// and files are the same open files, so the registrations stay after the helper exits, and our
/// own numbers are never disturbed (threads of ours may be using them). Fails with the index
/// of the registration that failed and the error.
pub fn epoll_add_all(adds: &[EpollAdd]) -> Result<(), (usize, io::Error)> {
    if adds.is_empty() {
        return Ok(());
    }
    // Everything the helper needs is allocated before the fork: it may only make syscalls.
    let mut used: Vec<RawFd> = adds.iter().flat_map(|a| [a.epoll, a.source]).collect();
    used.sort_unstable();
    used.dedup();
    let index = |fd: RawFd| used.binary_search(&fd).unwrap_or(0);
    let plan: Vec<(usize, usize, RawFd, libc::epoll_event)> = adds
        .iter()
        .map(|a| {
            (
                index(a.epoll),
                index(a.source),
                a.fd,
                libc::epoll_event {
                    events: a.events,
                    u64: a.data,
                },
            )
        })
        .collect();
    let mut moved: Vec<RawFd> = vec![-1; used.len()];
    let base = adds.iter().map(|a| a.fd).max().unwrap_or(0).max(2) + 1;
    let mut report = [0 as RawFd; 2];
    // SAFETY: `report` is a valid two-element out-array.
    if unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((0, last_err()));
    }
    // SAFETY: pipe2 returned these descriptors; nothing else owns them.
    let (rd, wr) = unsafe {
        (
            OwnedFd::from_raw_fd(report[0]),
            OwnedFd::from_raw_fd(report[1]),
        )
    };
    // SAFETY: the child runs only async-signal-safe syscalls on memory allocated before the
    // fork (`used`, `moved`, `plan`), then _exit; it never returns into Rust code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err((0, last_err()));
    }
    if child == 0 {
        // SAFETY: see above; every pointer is to memory this (copied) process owns.
        unsafe {
            let fail = |at: usize| -> ! {
                let msg = [at as i64, *libc::__errno_location() as i64];
                libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), 16);
                libc::_exit(1)
            };
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            // Out of the way of every number a target goes to.
            for (k, fd) in used.iter().enumerate() {
                let m = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, base);
                match moved.get_mut(k) {
                    Some(slot) if m >= 0 => *slot = m,
                    _ => fail(0),
                }
            }
            for (i, (ep, src, fd, ev)) in plan.iter().enumerate() {
                let mut ev = *ev;
                let (Some(src), Some(ep)) = (moved.get(*src), moved.get(*ep)) else {
                    fail(i)
                };
                if libc::dup2(*src, *fd) < 0
                    || libc::epoll_ctl(*ep, libc::EPOLL_CTL_ADD, *fd, &mut ev) < 0
                {
                    fail(i);
                }
            }
            libc::_exit(0)
        }
    }
    drop(wr);
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {
        let e = last_err();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err((0, e));
        }
    }
    let mut msg = [0i64; 2];
    // SAFETY: reads at most 16 bytes into a valid buffer.
    let n = unsafe { libc::read(rd.as_raw_fd(), msg.as_mut_ptr().cast(), 16) };
    if n == 16 {
        return Err((
            msg[0].max(0) as usize,
            io::Error::from_raw_os_error(msg[1] as i32),
        ));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err((0, io::Error::other("the epoll helper process failed")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn read_u64(fd: &OwnedFd) -> u64 {
        let mut b = [0u8; 8];
        // SAFETY: reads 8 bytes into a valid buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
        assert_eq!(n, 8);
        u64::from_ne_bytes(b)
    }

    #[test]
    fn semaphore_mode_is_told_by_reading() {
        for count in [0u64, 1, 2, 7] {
            for sem in [false, true] {
                let fd = eventfd(count, sem, libc::O_NONBLOCK).expect("eventfd");
                assert_eq!(eventfd_is_semaphore(fd.as_fd(), count).expect("probe"), sem);
                if count > 0 {
                    let got = read_u64(&fd);
                    assert_eq!(
                        got,
                        if sem { 1 } else { count },
                        "count {count} left as it was"
                    );
                }
            }
        }
    }

    #[test]
    fn epoll_targets_get_their_numbers() {
        let ep = epoll().expect("epoll");
        let ev = eventfd(3, false, 0).expect("eventfd");
        let add = EpollAdd {
            epoll: ep.as_raw_fd(),
            source: ev.as_raw_fd(),
            fd: 900,
            events: libc::EPOLLIN as u32,
            data: 0xfeed,
        };
        epoll_add_all(&[add]).expect("added");
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", ep.as_raw_fd()))
            .expect("fdinfo");
        assert!(info.contains("tfd:      900"), "{info}");
        assert!(info.contains("data:             feed"), "{info}");
    }
}
