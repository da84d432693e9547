//! Namespaces and process creation for restore: a private pid namespace (inside a user
//! namespace when unprivileged), its pid-1 reaper, and clone3 with a chosen pid.

use std::io;

use super::{last_err, Pid};

/// Step one of getting a private pid namespace, for callers without CAP_SYS_ADMIN: enter a
/// user namespace that maps the caller's own uid and gid to themselves, which gives the
/// capabilities that a pid namespace and clone3's `set_tid` need. Must be called while the
/// process is single-threaded. Does nothing for root.
pub fn enter_user_namespace() -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    if euid == 0 {
        return Ok(());
    }
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(last_err());
    }
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    std::fs::write("/proc/self/setgroups", "deny\n")?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Step two: the calling thread's future children go into a new pid namespace. Threads can
/// no longer be created by this thread afterwards (the kernel forbids it), so start any
/// worker threads before.
pub fn unshare_pid_namespace() -> io::Result<()> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Fork the pid-1 reaper of the new pid namespace. It reaps whatever is left to it (the
/// processes a job's root leaves behind when it exits) and otherwise sleeps; it dies with its
/// parent (PR_SET_PDEATHSIG) and is killed by the restorer when the job has ended.
pub fn spawn_reaper() -> io::Result<Pid> {
    // SAFETY: the child only calls async-signal-safe functions and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(last_err()),
        0 => {
            // SAFETY: async-signal-safe calls in the forked child.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // It holds nothing: a pipe end kept open here would keep a reader in the job
                // from ever seeing its end.
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                libc::prctl(libc::PR_SET_NAME, c"mrun-pidns-init".as_ptr());
                let mut chld: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut chld);
                libc::sigaddset(&mut chld, libc::SIGCHLD);
                libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
                loop {
                    while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    libc::sigwaitinfo(&chld, &mut info);
                }
            }
        }
        child => Ok(Pid::from_raw(child)),
    }
}

/// Fork a process with pid `pgid` (in the new pid namespace) that leads a process group of
/// that id and only sleeps, so that members of a group whose leader had exited can join it
/// again. It dies with its parent; the restorer kills it once they have joined.
pub fn spawn_group_holder(pgid: i32) -> io::Result<Pid> {
    match fork_with_pid(pgid)? {
        Some(holder) => {
            // As a shell does, from both sides: whichever runs first, the group exists
            // before any member tries to join it.
            // SAFETY: setpgid takes only integers.
            unsafe { libc::setpgid(holder.as_raw(), holder.as_raw()) };
            Ok(holder)
        }
        None => {
            // SAFETY: async-signal-safe calls in the forked child, which never returns.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_NAME, c"mrun-group".as_ptr());
                loop {
                    libc::pause();
                }
            }
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Like fork(), but the child gets `pid` in the innermost pid namespace.
/// Returns `Ok(None)` in the child and `Ok(Some(child))` in the parent.
pub fn fork_with_pid(pid: i32) -> io::Result<Option<Pid>> {
    let tids: [libc::pid_t; 1] = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork; `args` and `tids` live across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => Err(last_err()),
        0 => Ok(None),
        child => Ok(Some(Pid::from_raw(child as i32))),
    }
}

/// Give the calling process (the first of a new pid namespace) a mount namespace whose `/proc`
/// shows that pid namespace, so that `/proc/self/task/TID` matches the ids the process knows.
/// Mounts made here never propagate back (the tree is made a slave first); if that cannot be
/// ensured, nothing is mounted. Returns whether `/proc` was mounted. Async-signal-safe.
pub fn mount_own_proc() -> bool {
    // SAFETY: unshare and mount take flags and NUL-terminated static strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let none = std::ptr::null();
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_SLAVE,
            none.cast(),
        ) != 0
        {
            return false;
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            flags,
            none.cast(),
        ) == 0
    }
}
