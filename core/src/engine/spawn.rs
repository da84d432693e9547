//! The fresh processes a restore fills: the job's tree rebuilt top-down with the original pids
//! in a new pid namespace (each parent forks its own children with clone3 `set_tid`, so
//! parent/child links, sessions and process groups come back), each given its fds, cwd, umask
//! and personality, then stopped at the exec of its own executable (so `/proc/PID/exe` is
//! right) before it runs a single instruction of the image.
//!
//! The root is traced from birth (PTRACE_TRACEME: its parent is the restorer). The others are
//! not the restorer's children: each waits, before its exec, for a byte on a pipe the restorer
//! writes once it has seized them all, so every exec stops for the restorer
//! (PTRACE_O_TRACEEXEC).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};

use super::error::{Context, EngineError, Result};
use crate::sys::{caps, ns, ptrace, ptrace::Stop, Pid};

/// Most descriptors one restored process may have (the forked child moves them through a
/// fixed table; [`spawn`] refuses more before anything is created).
pub const MAX_FDS: usize = 4096;

/// How long the restorer waits for the whole tree to be created.
const TREE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one process needs, prepared before any is created (they only make syscalls).
pub struct ChildPlan {
    /// The pid it gets (in the new pid namespace).
    pub pid: i32,
    pub exe: CString,
    pub cwd: CString,
    /// The working directory had been removed: it is made at `cwd` (or, where its parent is
    /// gone too, at `cwd_fallback`), entered and removed again, so the process is in a removed
    /// directory as before.
    pub cwd_removed: bool,
    pub cwd_fallback: CString,
    pub umask: u32,
    pub personality: u32,
    /// `(target fd, source fd in the restorer)`.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Keep the capability that clone3's `set_tid` needs across the exec (an unprivileged
    /// restore of a threaded process into a pid namespace; see [`crate::sys::caps`]).
    pub lend_checkpoint_capability: bool,
    /// It leads a session of the job: setsid() before anything else.
    pub setsid: bool,
    /// A process group led by a member of the job (its own pid, or another member's); `None`
    /// to stay in the group it is born in.
    pub pgid: Option<i32>,
    /// Indices of its children among the plans.
    pub children: Vec<usize>,
    /// Its children that had exited and were not waited for: created and ended at once, with
    /// their status, so that its wait finds them as before.
    pub zombies: Vec<ZombiePlan>,
    /// The root only: address ranges of pages held by the restorer at their own addresses
    /// ([`crate::sys::placed::PlacedPages`]) that it keeps. Not empty: it does not exec (which would
    /// drop them) but stops where it is, a copy of the restorer, holding them; the restore
    /// then clears everything else and sets its executable by `PR_SET_MM_MAP`.
    pub keep: Vec<(u64, u64)>,
}

pub struct ZombiePlan {
    pub pid: i32,
    pub pgid: Option<i32>,
    /// The wait status it ends with.
    pub status: i32,
}

/// The whole tree: `members[0]` is the root.
pub struct TreePlan {
    pub members: Vec<ChildPlan>,
    /// Put the root in a process group of its own (see [`super::RestoreOptions`]).
    pub own_process_group: bool,
    /// Mount a `/proc` of the new pid namespace in a mount namespace of its own (best effort;
    /// see [`ns::mount_own_proc`]).
    pub own_proc: bool,
    /// Process groups whose leader had exited: each is made again by a holder process with
    /// the leader's pid, until the members have joined it (see [`Spawned::drop_holders`]).
    pub leaderless_groups: Vec<i32>,
}

/// The fresh processes and the pid namespace's init. Dropping it kills them all, unless
/// released.
pub struct Spawned {
    /// The root (our child).
    pub pid: Pid,
    pub reaper: Option<Pid>,
    /// Every member in plan order (the root first), ids in our pid namespace.
    pub members: Vec<Pid>,
    /// Threads created in them so far: traced, so their exits must be collected before their
    /// leaders' can be.
    pub threads: Vec<Pid>,
    /// The holders of groups whose leader had exited (our children).
    holders: Vec<Pid>,
    released: bool,
}

impl Spawned {
    /// End the group holders once every member has joined its group: the groups live on
    /// without their leader, as they did.
    pub fn drop_holders(&mut self) {
        for h in self.holders.drain(..) {
            let _ = kill(h, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(h, None);
        }
    }

    /// Hand the processes over to the caller (who now waits for them).
    pub fn release(mut self) -> (Pid, Option<Pid>) {
        self.released = true;
        (self.pid, self.reaper)
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.drop_holders();
        if self.released {
            return;
        }
        // The namespace's init takes every process of the namespace with it.
        if let Some(r) = self.reaper {
            let _ = kill(r, Signal::SIGKILL);
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        for t in &self.threads {
            let _ = ptrace::wait(*t);
        }
        for m in self.members.iter().skip(1) {
            let _ = ptrace::wait(*m);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
        if let Some(r) = self.reaper {
            let _ = nix::sys::wait::waitpid(r, None);
        }
    }
}

/// Create the tree (when `pid_ns` is true, the caller has already called
/// [`ns::unshare_pid_namespace`]) and wait until every member is stopped at its exec (the
/// root, when it keeps held pages, where it stopped itself). `root_inherits(true)` is called
/// right before the root is forked and `root_inherits(false)` right after: the root alone
/// takes the held pages, no other process forked here does.
pub fn spawn(
    tree: &TreePlan,
    pid_ns: bool,
    root_inherits: &dyn Fn(bool) -> std::io::Result<()>,
) -> Result<Spawned> {
    let Some(root) = tree.members.first() else {
        return Err(EngineError::Unrestorable(
            "the image holds no process".into(),
        ));
    };
    if let Some(m) = tree.members.iter().find(|m| m.fds.len() > MAX_FDS) {
        return Err(EngineError::Unrestorable(format!(
            "pid {} has {} descriptors; a restore can give a process at most {MAX_FDS}",
            m.pid,
            m.fds.len()
        )));
    }
    if tree.members.len() > 1 && !pid_ns {
        return Err(EngineError::Unrestorable(
            "a job of several processes can only be restored with its original pids".into(),
        ));
    }
    let (go_read, go_write) = nix::unistd::pipe().ctx(|| "creating the start pipe".into())?;
    let reaper = if pid_ns {
        Some(ns::spawn_reaper().ctx(|| "starting the pid namespace's init".into())?)
    } else {
        None
    };
    let mut holders = Vec::with_capacity(tree.leaderless_groups.len());
    let mut holder_failed = None;
    if pid_ns {
        for &g in &tree.leaderless_groups {
            match ns::spawn_group_holder(g) {
                Ok(h) => holders.push(h),
                Err(e) => {
                    holder_failed = Some(EngineError::Os {
                        what: format!("making process group {g} again"),
                        source: e,
                    });
                    break;
                }
            }
        }
    }
    let inherit = match root.keep.is_empty() {
        true => Ok(()),
        false => root_inherits(true).map_err(|e| EngineError::Os {
            what: "letting the fresh process take the pages sent ahead".into(),
            source: e,
        }),
    };
    let forked = match holder_failed.or(inherit.err()) {
        Some(e) => Err(e),
        None if pid_ns => ns::fork_with_pid(root.pid).map_err(|e| EngineError::Os {
            what: format!("creating a process with pid {}", root.pid),
            source: e,
        }),
        None => fork().map_err(|e| EngineError::Os {
            what: format!("creating a process with pid {}", root.pid),
            source: e,
        }),
    };
    if !root.keep.is_empty() {
        // Best effort: another fork from here would copy their page tables, nothing worse.
        let _ = root_inherits(false);
    }
    let child = match forked {
        Ok(Some(child)) => child,
        Ok(None) => child_main(tree, 0, go_read.as_raw_fd()),
        Err(e) => {
            for h in holders {
                let _ = kill(h, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(h, None);
            }
            if let Some(r) = reaper {
                let _ = kill(r, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(r, None);
            }
            return Err(e);
        }
    };
    drop(go_read);
    let mut spawned = Spawned {
        pid: child,
        reaper,
        members: vec![child],
        threads: Vec::new(),
        holders,
        released: false,
    };
    match ptrace::wait(child).ctx(|| "waiting for the fresh process".into())? {
        Stop::Signal(s) if s == libc::SIGTRAP => {}
        Stop::Exited(code) => return Err(could_not_start(root, code)),
        other => {
            return Err(EngineError::Unrestorable(format!(
                "the fresh process stopped unexpectedly ({other:?})"
            )))
        }
    }
    ptrace::set_options(child, true).ctx(|| "setting ptrace options".into())?;
    if tree.members.len() > 1 {
        seize_members(tree, &mut spawned)?;
        start_members(tree, &spawned, go_write)?;
    }
    Ok(spawned)
}

fn could_not_start(plan: &ChildPlan, code: i32) -> EngineError {
    EngineError::Unrestorable(format!(
        "the fresh process for pid {} could not start {} (exit code {code}: {})",
        plan.pid,
        plan.exe.to_string_lossy(),
        std::io::Error::from_raw_os_error(code)
    ))
}

/// Find every member (they appear as their parents fork them) and attach to it before it
/// execs.
fn seize_members(tree: &TreePlan, spawned: &mut Spawned) -> Result<()> {
    let mut found: Vec<Option<Pid>> = vec![None; tree.members.len()];
    found[0] = Some(spawned.pid);
    let deadline = Instant::now() + TREE_TIMEOUT;
    loop {
        let mut queue = vec![spawned.pid];
        while let Some(p) = queue.pop() {
            for child in crate::sys::process::children(p) {
                queue.push(child);
                let Some(inner) = inner_pid(child) else {
                    continue;
                };
                let Some(i) = tree.members.iter().position(|m| m.pid == inner) else {
                    continue;
                };
                if found[i].is_none() {
                    ptrace::seize_for_restore(child)
                        .ctx(|| format!("attaching to the fresh process for pid {inner}"))?;
                    found[i] = Some(child);
                    spawned.members.push(child);
                }
            }
        }
        if found.iter().all(Option::is_some) {
            // Plan order, so that members[i] is plan i.
            spawned.members = found.into_iter().flatten().collect();
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing: Vec<String> = tree
                .members
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(m, _)| m.pid.to_string())
                .collect();
            return Err(EngineError::Unrestorable(format!(
                "the fresh processes for pids {} were not created",
                missing.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Let every member but the root exec, and wait until each is stopped at its exec.
fn start_members(tree: &TreePlan, spawned: &Spawned, go: OwnedFd) -> Result<()> {
    let bytes = vec![b'g'; tree.members.len() - 1];
    nix::unistd::write(&go, &bytes).ctx(|| "starting the fresh processes".into())?;
    drop(go);
    for (plan, pid) in tree.members.iter().zip(&spawned.members).skip(1) {
        let mut execed = false;
        loop {
            match ptrace::wait(*pid)
                .ctx(|| format!("waiting for the fresh process {}", plan.pid))?
            {
                // Still inside execve: run it to its syscall exit, so that registers set now
                // are what the process returns to user space with.
                Stop::Event(ptrace::EVENT_EXEC) => {
                    execed = true;
                    ptrace::syscall_step(*pid).ctx(|| format!("resuming pid {}", plan.pid))?;
                }
                Stop::Syscall if execed => break,
                Stop::Exited(code) => return Err(could_not_start(plan, code)),
                Stop::Killed(sig) => {
                    return Err(EngineError::Unrestorable(format!(
                        "the fresh process for pid {} was killed by signal {sig}",
                        plan.pid
                    )))
                }
                _ => ptrace::cont(*pid, None).ctx(|| format!("resuming pid {}", plan.pid))?,
            }
        }
    }
    Ok(())
}

/// The pid `pid` has in its own (innermost) pid namespace.
fn inner_pid(pid: Pid) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

fn fork() -> std::io::Result<Option<Pid>> {
    // SAFETY: the child only runs `child_main`, which makes async-signal-safe syscalls.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(None),
        c => Ok(Some(Pid::from_raw(c))),
    }
}

/// Runs in each forked process, `tree.members[i]`: session and group, its own children, (for
/// all but the root) the restorer's go, then fds, cwd, umask, personality, and the exec,
/// stopped. Exits with the errno of the step that failed.
fn child_main(tree: &TreePlan, i: usize, go: RawFd) -> ! {
    let Some(plan) = tree.members.get(i) else {
        // SAFETY: _exit is always safe.
        unsafe { libc::_exit(libc::EINVAL) }
    };
    // SAFETY: only async-signal-safe syscalls on values prepared before the fork.
    unsafe {
        let fail = |_: &str| -> ! { libc::_exit(*libc::__errno_location()) };
        if plan.setsid && libc::setsid() < 0 {
            fail("setsid");
        }
        if i == 0 && tree.own_proc {
            ns::mount_own_proc();
        }
        if i == 0 && tree.own_process_group && libc::setpgid(0, 0) != 0 {
            fail("setpgid");
        }
        if plan.pgid == Some(plan.pid) {
            libc::setpgid(0, 0);
        }
        // The pages it keeps stay out of its children (each would copy their page tables).
        advise_kept(&plan.keep, libc::MADV_DONTFORK);
        for &c in &plan.children {
            let Some(child) = tree.members.get(c) else {
                continue;
            };
            match ns::fork_with_pid(child.pid) {
                Ok(None) => child_main(tree, c, go),
                Ok(Some(_)) => {
                    // As a shell does: the parent puts the child in its group too, so that
                    // neither has to wait for the other.
                    if let Some(g) = child.pgid {
                        libc::setpgid(child.pid, g);
                    }
                }
                Err(_) => fail("clone3"),
            }
        }
        make_zombies(&plan.zombies);
        advise_kept(&plan.keep, libc::MADV_DOFORK);
        if let Some(g) = plan.pgid {
            libc::setpgid(0, g);
        }
        if i != 0 {
            let mut byte = 0u8;
            loop {
                let n = libc::read(go, std::ptr::addr_of_mut!(byte).cast(), 1);
                if n == 1 {
                    break;
                }
                if n == 0 || *libc::__errno_location() != libc::EINTR {
                    // The restorer is gone.
                    libc::_exit(libc::ECANCELED);
                }
            }
        }
        let top = plan
            .fds
            .iter()
            .map(|(t, s)| (*t).max(*s))
            .max()
            .unwrap_or(2)
            .max(2)
            + 1;
        let mut moved = [0 as RawFd; MAX_FDS];
        for (k, (_, src)) in plan.fds.iter().enumerate() {
            let m = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, top);
            if m < 0 {
                fail("dup");
            }
            match moved.get_mut(k) {
                Some(slot) => *slot = m,
                None => fail("too many descriptors"),
            }
        }
        for (k, (target, _)) in plan.fds.iter().enumerate() {
            if libc::dup2(moved.get(k).copied().unwrap_or(-1), *target) < 0 {
                fail("dup2");
            }
        }
        for fd in 0..top {
            if !plan.fds.iter().any(|(t, _)| *t == fd) {
                libc::close(fd);
            }
        }
        libc::syscall(libc::SYS_close_range, top as u32, u32::MAX, 0u32);
        if plan.cwd_removed {
            let made = if libc::mkdir(plan.cwd.as_ptr(), 0o700) == 0 {
                plan.cwd.as_ptr()
            } else if libc::mkdir(plan.cwd_fallback.as_ptr(), 0o700) == 0 {
                plan.cwd_fallback.as_ptr()
            } else {
                fail("mkdir")
            };
            if libc::chdir(made) != 0 || libc::rmdir(made) != 0 {
                fail("chdir");
            }
        } else if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail("chdir");
        }
        libc::umask(plan.umask as libc::mode_t);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::personality(plan.personality as libc::c_ulong);
        if plan.lend_checkpoint_capability
            && caps::keep_checkpoint_capability_across_exec().is_err()
        {
            fail("capabilities");
        }
        if i == 0 && libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
            fail("traceme");
        }
        if !plan.keep.is_empty() {
            // Stopped as an exec would stop it (SIGTRAP, traced); the restorer takes it
            // from here and never lets it return.
            libc::syscall(
                libc::SYS_kill,
                libc::syscall(libc::SYS_getpid),
                libc::SIGTRAP,
            );
            libc::_exit(libc::ECANCELED);
        }
        let argv = [plan.exe.as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail("execve")
    }
}

/// `madvise(advice)` over each kept range. Async-signal-safe: runs in a forked child.
fn advise_kept(keep: &[(u64, u64)], advice: libc::c_int) {
    for &(s, e) in keep {
        // SAFETY: DONTFORK/DOFORK only change how a fork treats ranges this process has.
        unsafe { libc::madvise(s as *mut libc::c_void, (e - s) as usize, advice) };
    }
}

/// Create each zombie child and let it end with its status; wait until it has (without
/// reaping it), and take back the SIGCHLD its end raised here, so the restored parent sees no
/// new one. Runs in a forked child, like [`child_main`].
fn make_zombies(zombies: &[ZombiePlan]) {
    if zombies.is_empty() {
        return;
    }
    // SAFETY: async-signal-safe calls on values prepared before the fork.
    unsafe {
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        for z in zombies {
            match ns::fork_with_pid(z.pid) {
                Ok(None) => {
                    if let Some(g) = z.pgid {
                        libc::setpgid(0, g);
                    }
                    if libc::WIFSIGNALED(z.status) {
                        let sig = libc::WTERMSIG(z.status);
                        let none = libc::rlimit {
                            rlim_cur: 0,
                            rlim_max: 0,
                        };
                        libc::setrlimit(libc::RLIMIT_CORE, &none);
                        libc::signal(sig, libc::SIG_DFL);
                        let mut all: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut all);
                        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
                        libc::kill(libc::getpid(), sig);
                    }
                    libc::_exit(libc::WEXITSTATUS(z.status))
                }
                Ok(Some(child)) => {
                    if let Some(g) = z.pgid {
                        libc::setpgid(child.as_raw(), g);
                    }
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    libc::waitid(
                        libc::P_PID,
                        child.as_raw() as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    );
                }
                Err(_) => libc::_exit(libc::ECHILD),
            }
        }
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        while libc::sigtimedwait(&chld, std::ptr::null_mut(), &zero) == libc::SIGCHLD {}
    }
}
