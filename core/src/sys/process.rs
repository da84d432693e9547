//! Starting helper processes with extra inherited descriptors (beyond stdin/stdout/stderr).

use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Most extra descriptors a helper gets.
const MAX_PASSED: usize = 8;

/// Arrange for `cmd`'s child to get each `(fd, number)` pair as descriptor `number`. The
/// caller keeps the descriptors open until the command is spawned, and closes its copies then.
pub fn pass_fds(cmd: &mut Command, fds: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    if fds.len() > MAX_PASSED {
        return Err(std::io::Error::other("too many descriptors to pass"));
    }
    let mut raw = [(-1 as RawFd, -1 as RawFd); MAX_PASSED];
    raw[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    // SAFETY: the closure runs in the forked child before exec; it allocates nothing and only
    // calls fcntl/dup2, which are async-signal-safe. Sources are first moved above every
    // target so that no dup2 overwrites a source still needed.
    unsafe {
        cmd.pre_exec(move || {
            let pairs = &raw[..n];
            let top = pairs.iter().map(|(s, t)| (*s).max(*t)).max().unwrap_or(2) + 1;
            let mut moved = [-1 as RawFd; MAX_PASSED];
            for (i, (src, _)) in pairs.iter().enumerate() {
                moved[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, top);
                if moved[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, target)) in pairs.iter().enumerate() {
                if libc::dup2(moved[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Take ownership of descriptor `fd`, inherited from the parent by contract (see
/// [`pass_fds`]). Fails if it is not open.
pub fn inherited_fd(fd: RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only inspects the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open and, by the helper contract, nothing else in this
    // process owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Have the kernel SIGKILL this process when its parent dies (and die now if it already did).
pub fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: getppid has no failure mode.
    let parent = unsafe { libc::getppid() };
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        std::process::exit(1);
    }
    Ok(())
}

/// Start `cmd`'s child with no signal blocked (std passes the parent's mask on, and mrun's
/// deputy blocks the signals it relays).
pub fn unblock_signals_in_child(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls sigemptyset
    // and sigprocmask on a stack value, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The robust futex list of thread `tid`: `(head, length)` (get_robust_list(2); needs ptrace
/// access to it).
pub fn robust_list(tid: super::Pid) -> std::io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: u64 = 0;
    // SAFETY: both out-pointers are valid for one word each.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut u64,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((head, len))
}

/// The descriptors above stderr (3 and up) this process has open, in ascending order.
pub fn open_fds_above_stdio() -> std::io::Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    fds.sort_unstable();
    // The listing's own directory descriptor was among them, and is closed by now.
    // SAFETY: F_GETFD only inspects the descriptor.
    fds.retain(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0);
    Ok(fds)
}

/// Mark descriptor `fd` close-on-exec: nothing this process starts inherits it (unless
/// [`keep_fds_in_child`] says otherwise for one child).
pub fn set_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFD only reads this descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFD only changes this descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Have `cmd`'s child inherit each of `fds` under its own number, although this process marked
/// them close-on-exec (the flag belongs to the descriptor, so clearing it in the child leaves
/// ours alone).
pub fn keep_fds_in_child(cmd: &mut Command, fds: &[RawFd]) {
    if fds.is_empty() {
        return;
    }
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec; it allocates nothing (the
    // vector was built before the fork) and only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

/// The children of every thread of `pid` (`/proc/PID/task/TID/children`), in the caller's pid
/// namespace; none for a process that is gone.
pub fn children(pid: super::Pid) -> Vec<super::Pid> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .map(super::Pid::from_raw),
        );
    }
    out
}

/// Whether some process has the id `id` in the pid namespace of process `anchor` (its
/// innermost pid there).
pub fn pid_in_use(anchor: super::Pid, id: i32) -> bool {
    let ns_of = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(ns) = ns_of(&anchor.to_string()) else {
        return true;
    };
    if ns_of("self") == Some(ns.clone()) {
        return std::path::Path::new(&format!("/proc/{id}")).exists();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| ns_of(p).as_ref() == Some(&ns))
        .any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("NSpid:"))?.to_owned();
                    line.split_whitespace().last()?.parse::<i32>().ok()
                })
                == Some(id)
        })
}

/// Every descendant of `pid`, parents before their children (`pid` itself not included).
pub fn descendants(pid: super::Pid) -> Vec<super::Pid> {
    let mut out = children(pid);
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        i += 1;
        out.extend(children(p));
    }
    out
}
