//! Restore: bring an image back to life in fresh processes (the job's tree), stage by stage.
//! The processes run only after the whole image was read and verified; any failure before
//! that kills them all and nothing of them ever ran.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::compat;
use super::error::{Context, EngineError, Result};
use super::inject::{Call, Injector, Scratch};
use super::spawn::{self, ChildPlan, TreePlan, ZombiePlan};
use crate::arch;
use crate::image::model::{Backing, Header, JobState, ProcessState, Vma};
use crate::image::precopy::PageStore;
use crate::image::ImageReader;
use crate::ranges::RangeSet;
use crate::resource::{attrs, events, fds, madvise, mem, signals, task, thread, timers};
use crate::sys::cpu::OneCpu;
use crate::sys::{memory, ns, ptrace, Pid};
use nix::sched::CpuSet;

/// `rseq` flag: unregister the calling thread's area.
const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// Size of the area that holds the syscall trap and scratch space during a restore.
const TRAMPOLINE: u64 = 64 * 1024;
const PAGE: u64 = 4096;
const LOWEST: u64 = 0x1000_0000;
const HIGHEST: u64 = 0x7fff_ffff_0000;

/// The read buffer to put in front of an image file or pipe. The reader asks for a record's
/// few header bytes, then for its body, which (at least this size) bypasses the buffer. A
/// larger one only costs: the 1 MiB one was filled (page faults and one more copy) before the
/// first record was read, 0.6 ms of a 1 MiB restore.
pub const READ_BUFFER: usize = 64 << 10;

pub struct RestoreOptions {
    /// Stand-ins for the original's stdio pipes/terminals: fds of the restorer.
    pub stdio: [RawFd; 3],
    /// Give the process its original pid, in a new pid namespace. Unprivileged callers must
    /// have called [`crate::sys::ns::enter_user_namespace`] first, while single-threaded.
    pub original_pid: bool,
    /// Give the process a process group of its own, for the caller to make its terminal's
    /// foreground group. Without it, a restorer that leads the terminal's session shares its
    /// group with the process, a group the kernel counts as orphaned (no parent in another
    /// group of the session), and drops the terminal's ^Z for.
    pub own_process_group: bool,
}

/// A restored, running process (a child of the caller) and its pid namespace's init.
pub struct Restored {
    pub pid: Pid,
    pub reaper: Option<Pid>,
    pub header: Header,
    /// The pages pre-copy sent ahead, kept so that the caller frees them (the job's memory
    /// size, tens of ms per GiB) after saying the process runs, not before; but soon: until
    /// then the process shares those held in place, and each one it writes is copied first.
    pub sent_ahead: Arc<PageStore>,
}

/// The stages of a restore, in order. Each is a function over [`Restoring`]; [`Stage::undo`]
/// says (and does) what undoes it when a later stage fails. Until [`Stage::Run`] lets it go,
/// nothing of the fresh process has run a single instruction of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Read and check the header and the state: architecture, xsave layout and vDSO must
    /// match; the image must have a leader thread.
    Header,
    /// Open the image's files here (each open file once) and create the fresh processes, the
    /// job's tree with its pids, sessions and groups, each stopped at its exec.
    Spawn,
    /// Map the trap/scratch area at a place free in both layouts; drop the exec'd mappings.
    Clear,
    /// Move `[vvar]`, `[vvar_vclock]` and `[vdso]` to the image's addresses.
    Specials,
    /// Map the image's memory areas and stream the pages into them.
    Memory,
    /// Process-wide kernel state: final protections, dispositions, mm fields, fd flags,
    /// rlimits, the process-wide signal queue; the leader's own thread state.
    Kernel,
    /// In every process, create every other thread with its original id (clone3 `set_tid`, from inside the
    /// leader), each stopped before its first instruction and given its own state; then the
    /// process's timers, with their ids, armed last.
    Threads,
    /// Unmap the trap; set every thread's registers, xstate and mask; arm the timerfds; release
    /// all threads.
    Run,
}

impl Stage {
    const ALL: [Stage; 8] = [
        Stage::Header,
        Stage::Spawn,
        Stage::Clear,
        Stage::Specials,
        Stage::Memory,
        Stage::Kernel,
        Stage::Threads,
        Stage::Run,
    ];

    fn run<R: Read>(self, r: &mut Restoring<'_, R>) -> Result<()> {
        match self {
            Stage::Header => r.check_header(),
            Stage::Spawn => r.spawn(),
            Stage::Clear => r.clear(),
            Stage::Specials => r.specials(),
            Stage::Memory => r.memory(),
            Stage::Kernel => r.kernel(),
            Stage::Threads => r.threads(),
            Stage::Run => r.release(),
        }
    }

    /// Undo this (completed) stage, after a later one failed. Everything from Clear to Threads
    /// happened inside the fresh process and goes with it; Spawn's undo kills it (its threads
    /// reaped first) and its pid namespace's init. Run is the point of no return.
    fn undo<R: Read>(self, r: &mut Restoring<'_, R>) {
        if self == Stage::Spawn {
            drop(r.child.take());
        }
    }
}

/// Everything a restore holds between stages.
struct Restoring<'a, R: Read> {
    opts: &'a RestoreOptions,
    reader: ImageReader<R>,
    header: Header,
    state: Option<JobState>,
    same_machine: bool,
    /// The fresh processes (and their threads): killed if dropped unreleased.
    child: Option<spawn::Spawned>,
    /// One per process of the job, in image order.
    fresh: Vec<Fresh>,
    /// Files made for named shared memory, removed again if the restore fails.
    made_files: Option<crate::resource::made_files::MadeFiles>,
    /// Timerfds made for the job, armed just before it runs.
    timers: Option<events::Timers>,
    /// What pre-copy sent ahead, some of it held at its own addresses.
    sent_ahead: Arc<PageStore>,
    /// This thread and the fresh processes on one CPU while it drives them (`sys::cpu`).
    pin: Option<OneCpu>,
}

/// One fresh process being filled.
struct Fresh {
    /// Its pid in our namespace.
    pid: Pid,
    /// Drives its leader thread; the trap sits at its entry point, then in the trampoline.
    leader: Option<Injector>,
    /// Mappings it had after its exec: `(start, end, name)`.
    present: Vec<(u64, u64, String)>,
    /// Address ranges in use by either layout (the trampoline's included once mapped).
    taken: Vec<(u64, u64)>,
    tramp: u64,
    scratch: Scratch,
    /// Its other threads, created in the Threads stage: index into the process's threads and
    /// an injector driving each.
    threads: Vec<(usize, Injector)>,
    /// The capability lent for `set_tid` must be dropped before the process runs.
    lent_capability: bool,
    /// `(shared object, descriptor)`: where the shared memory objects it maps wait for it
    /// (closed once mapped).
    shared_fds: Vec<(u32, i32)>,
    /// Address ranges of its memory it holds from birth: pages sent ahead, held by the
    /// restorer and kept through the fork (see [`ChildPlan::keep`]). Not empty: it did not
    /// exec, and `exe_fd` is its executable, for `PR_SET_MM_MAP`.
    kept: RangeSet,
    exe_fd: Option<i32>,
}

impl Fresh {
    fn leader(&self) -> Result<&Injector> {
        self.leader
            .as_ref()
            .ok_or_else(|| invalid("the fresh process is not ready yet"))
    }
}

pub fn restore<R: Read>(input: R, opts: &RestoreOptions) -> Result<Restored> {
    restore_reporting(input, opts, &mut |_| {})
}

/// As [`restore`], calling `taken(n)` once the `n`th pre-copy stream is all in (a node's
/// restore helper says so to its agent, which answers home's `Sync` only then).
pub fn restore_reporting<R: Read>(
    input: R,
    opts: &RestoreOptions,
    taken: &mut dyn FnMut(u32),
) -> Result<Restored> {
    let mut trace = crate::trace::Trace::new("restore");
    // Pages sent ahead while the job still ran (pre-copy), then the image.
    let (precopied, input) = crate::image::precopy::read_leading_reporting(input, taken)?;
    if precopied.pages() > 0 {
        let held = precopied.held().ranges().bytes() / crate::image::PAGE_SIZE as u64;
        trace.mark(&format!(
            "Precopied ({} pages, {held} held in place)",
            precopied.pages()
        ));
    }
    let (mut reader, header) = ImageReader::open(input)?;
    let sent_ahead = Arc::new(precopied);
    reader.set_precopied(Arc::clone(&sent_ahead));
    let mut r = Restoring {
        opts,
        reader,
        same_machine: header.boot_id == crate::resource::boot_id(),
        header,
        state: None,
        child: None,
        fresh: Vec::new(),
        made_files: None,
        timers: None,
        sent_ahead: Arc::clone(&sent_ahead),
        pin: None,
    };
    for (i, stage) in Stage::ALL.iter().enumerate() {
        if let Err(e) = stage.run(&mut r) {
            for done in Stage::ALL[..i].iter().rev() {
                done.undo(&mut r);
            }
            return Err(match e {
                EngineError::Os { what, source } => EngineError::Os {
                    what: format!("{what} (restore stage {stage:?})"),
                    source,
                },
                other => other,
            });
        }
        trace.mark(&format!("{stage:?}"));
    }
    let Some(child) = r.child.take() else {
        return Err(EngineError::Unrestorable(
            "the restored process was lost".into(),
        ));
    };
    if let Some(made) = r.made_files.take() {
        made.keep();
    }
    let (pid, reaper) = child.release();
    Ok(Restored {
        pid,
        reaper,
        header: r.header,
        sent_ahead,
    })
}

impl<R: Read> Restoring<'_, R> {
    fn check_header(&mut self) -> Result<()> {
        let here = compat::local(self.header.compat.xstate_size)?;
        compat::check(&self.header.compat, &here)?;
        let state = self.reader.read_state()?;
        if state.processes.is_empty() || state.processes.iter().any(|p| p.threads.is_empty()) {
            return Err(EngineError::Unrestorable(
                "the image holds a process without threads".into(),
            ));
        }
        self.state = Some(state);
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let (opts, header) = (self.opts, &self.header);
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| invalid("the state is not read yet"))?;
        // Named shared memory files first: descriptors may be open on them.
        let (shared, mut made) = mem::create_shared(&state.shared, self.same_machine)?;
        let mut prepared = fds::prepare(&state.files, opts.stdio, self.same_machine, &mut made)?;
        self.made_files = Some(made);
        self.timers = Some(std::mem::take(&mut prepared.timers));
        let mut shared_fds = Vec::with_capacity(state.processes.len());
        let unprivileged = !nix::unistd::geteuid().is_root();
        // The root keeps the pages held for it where it can be given its executable without
        // an exec: with the capability a pid namespace gives, or as root.
        let mut kept = match opts.original_pid || !unprivileged {
            true => adoptable(self.sent_ahead.held().ranges(), &state.processes[0].vmas),
            false => RangeSet::new(),
        };
        let mut exe_file = None;
        let mut members = Vec::with_capacity(state.processes.len());
        for (index, p) in state.processes.iter().enumerate() {
            // Each shared object it maps, on a descriptor above its own until it is mapped.
            let mut fds = prepared.plan(&p.fds);
            let spare = fds.iter().map(|(t, _)| *t).max().unwrap_or(2).max(2) + 1;
            let mine: Vec<(u32, i32)> = mem::shared_objects_of(&p.vmas)
                .into_iter()
                .enumerate()
                .map(|(k, o)| (o, spare + k as i32))
                .collect();
            for (o, at) in &mine {
                if let Some(fd) = shared.get(*o as usize) {
                    fds.push((*at, std::os::fd::AsRawFd::as_raw_fd(fd)));
                }
            }
            let exe = executable(p, self.same_machine)?;
            let mut keep = Vec::new();
            if index == 0 && !kept.is_empty() {
                match std::fs::File::open(std::ffi::OsStr::from_bytes(exe.to_bytes())) {
                    Ok(file) => {
                        let at = spare + mine.len() as i32;
                        fds.push((at, std::os::fd::AsRawFd::as_raw_fd(&file)));
                        exe_file = Some((at, file));
                        keep = kept.ranges().iter().map(|r| (r.start, r.end)).collect();
                    }
                    // Not readable: exec it, and copy the pages in.
                    Err(_) => kept = RangeSet::new(),
                }
            }
            shared_fds.push(mine);
            members.push(ChildPlan {
                pid: p.pid,
                exe,
                keep,
                cwd: cstring(p.cwd.strip_suffix(" (deleted)").unwrap_or(&p.cwd))?,
                cwd_removed: p.cwd.ends_with(" (deleted)"),
                cwd_fallback: cstring(&format!(
                    "{}/.mrun-removed-cwd-{}-{}",
                    std::env::temp_dir().display(),
                    std::process::id(),
                    p.pid
                ))?,
                umask: p.umask,
                personality: p.personality,
                fds,
                lend_checkpoint_capability: opts.original_pid
                    && p.threads.len() > 1
                    && unprivileged,
                setsid: p.sid != 0 && p.sid == p.pid,
                pgid: (p.pgid != 0).then_some(p.pgid),
                children: state
                    .processes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.ppid != 0 && c.ppid == p.pid)
                    .map(|(i, _)| i)
                    .collect(),
                zombies: state
                    .zombies
                    .iter()
                    .filter(|z| z.ppid == p.pid)
                    .map(|z| ZombiePlan {
                        pid: z.pid,
                        pgid: (z.pgid != 0).then_some(z.pgid),
                        status: z.status,
                    })
                    .collect(),
            });
        }
        let plan = TreePlan {
            members,
            own_process_group: opts.own_process_group,
            own_proc: opts.original_pid,
            leaderless_groups: state.leaderless_groups.clone(),
        };
        let xstate_len = state.processes[0].threads[0].xstate.len();
        // Threads first: none can be created once the pid namespace is unshared. They keep
        // every CPU; this thread, and the processes it forks, are pinned to one.
        self.reader.start_workers()?;
        self.pin = OneCpu::pin();
        if opts.original_pid {
            ns::unshare_pid_namespace().map_err(|e| {
                EngineError::Unrestorable(format!(
                    "cannot create a pid namespace to give the process its original pid {} \
                     ({e}); enable user namespaces or restore with a new pid",
                    header.pid
                ))
            })?;
        }
        let held = self.sent_ahead.held();
        let child = spawn::spawn(&plan, opts.original_pid, &|on| held.inherit_on_fork(on))?;
        let exe_fd = exe_file.map(|(at, _file)| at);
        drop(prepared);
        drop(shared);
        self.fresh = child
            .members
            .iter()
            .zip(&plan.members)
            .zip(shared_fds)
            .enumerate()
            .map(|(index, ((pid, m), shared_fds))| Fresh {
                pid: *pid,
                leader: None,
                present: Vec::new(),
                taken: Vec::new(),
                tramp: 0,
                scratch: Scratch { addr: 0, len: 0 },
                threads: Vec::new(),
                // Without an exec it keeps every capability of the restorer: all dropped
                // before it runs, as the exec of an ordinary user would have.
                lent_capability: m.lend_checkpoint_capability
                    || (!m.keep.is_empty() && unprivileged),
                shared_fds,
                kept: m.keep.iter().map(|&(s, e)| s..e).collect(),
                exe_fd: if index == 0 { exe_fd } else { None },
            })
            .collect();
        let root = child.pid;
        self.child = Some(child);
        let xstate_here =
            ptrace::get_xstate(root).ctx(|| "reading the fresh process's xstate".into())?;
        if xstate_here.len() != xstate_len {
            return Err(EngineError::Incompatible(format!(
                "the image is incompatible with this machine: its xsave area is {xstate_len} \
                 bytes, this CPU's is {}",
                xstate_here.len()
            )));
        }
        Ok(())
    }

    /// The fresh processes with their images, in order.
    fn each(&mut self) -> Result<(&mut Vec<Fresh>, &JobState)> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| invalid("the state is not read yet"))?;
        Ok((&mut self.fresh, state))
    }

    fn clear(&mut self) -> Result<()> {
        let (fresh, state) = self.each()?;
        for (f, p) in fresh.iter_mut().zip(&state.processes) {
            clear_one(f, p)?;
        }
        join_groups(fresh, state)?;
        if let Some(child) = self.child.as_mut() {
            child.drop_holders();
        }
        Ok(())
    }

    fn specials(&mut self) -> Result<()> {
        let (fresh, state) = self.each()?;
        for (f, p) in fresh.iter().zip(&state.processes) {
            move_specials(f.leader()?, &f.present, &p.vmas, &f.taken)?;
        }
        Ok(())
    }

    fn memory(&mut self) -> Result<()> {
        let same_machine = self.same_machine;
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| invalid("the state is not read yet"))?;
        for (f, p) in self.fresh.iter().zip(&state.processes) {
            check_file_identities(&p.vmas, same_machine)?;
            let fd_of = |o: u32| {
                f.shared_fds
                    .iter()
                    .find(|(s, _)| *s == o)
                    .map(|(_, fd)| *fd)
            };
            mem::map_vmas(f.leader()?, &f.scratch, &p.vmas, &f.kept, fd_of)?;
            for (_, fd) in &f.shared_fds {
                f.leader()?
                    .call("close", libc::SYS_close, [*fd as u64, 0, 0, 0, 0, 0])?;
            }
        }
        // The reader's workers write the pages, several records at a time. Pages the root
        // kept from birth are in place already: what the image names of them is noted, not
        // written (the bytes handed over are the held pages themselves, at their address).
        let pids: Vec<Pid> = self.fresh.iter().map(|f| f.pid).collect();
        let kept = self
            .fresh
            .first()
            .map(|f| f.kept.clone())
            .unwrap_or_default();
        let named = Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = Arc::clone(&named);
        let sink = move |tagged: u64, data: &[u8]| {
            let (index, addr) = crate::image::split_page_address(tagged);
            let pid = pids.get(index as usize).ok_or_else(|| {
                std::io::Error::other(format!(
                    "the image has pages of process {index}, which it does not describe"
                ))
            })?;
            let end = addr + data.len() as u64;
            if index == 0 && kept.touches(addr, end) {
                noted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(addr..end);
                if data.as_ptr() as u64 == addr && kept.covers(addr, end) {
                    return Ok(());
                }
            }
            memory::write(*pid, addr, data)
        };
        self.reader.for_each_pages(Arc::new(sink))?;
        if let Some(root) = self.fresh.first() {
            let mut named = std::mem::take(
                &mut *named
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            // In address order, so that each one extends the set (the workers' is not).
            named.sort_unstable_by_key(|r| r.start);
            let named: RangeSet = named.into_iter().collect();
            zero_unnamed(root.leader()?, &root.kept, &named)?;
        }
        Ok(())
    }

    fn kernel(&mut self) -> Result<()> {
        let original_pid = self.opts.original_pid;
        let unpinned = self.pin.as_ref().map(|p| *p.unpinned());
        let (fresh, state) = self.each()?;
        for (f, p) in fresh.iter().zip(&state.processes) {
            let own_pid = if original_pid { p.pid } else { f.pid.as_raw() };
            kernel_one(f, p, own_pid, unpinned.as_ref())?;
        }
        Ok(())
    }

    fn threads(&mut self) -> Result<()> {
        let exact = self.opts.original_pid;
        let unpinned = self.pin.as_ref().map(|p| *p.unpinned());
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| invalid("the state is not read yet"))?;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| invalid("there is no fresh process"))?;
        for (f, p) in self.fresh.iter_mut().zip(&state.processes) {
            let own_pid = if exact { p.pid } else { f.pid.as_raw() };
            threads_one(
                f,
                p,
                (own_pid, exact),
                unpinned.as_ref(),
                &mut child.threads,
            )?;
        }
        Ok(())
    }

    fn release(&mut self) -> Result<()> {
        let timers = self.timers.take();
        let (fresh, state) = self.each()?;
        for (f, p) in fresh.iter().zip(&state.processes) {
            let leader = p.leader().ok_or_else(|| invalid("no leader thread"))?;
            f.leader()?.call_last(
                "munmap of the trampoline",
                libc::SYS_munmap,
                [f.tramp, TRAMPOLINE, 0, 0, 0, 0],
            )?;
            for (index, own) in &f.threads {
                thread::apply_registers(own.pid(), &p.threads[*index])?;
            }
            thread::apply_registers(f.pid, leader)?;
        }
        // Timers go on from here with the time they had left.
        if let Some(timers) = timers {
            timers.arm()?;
        }
        // Every thread of every process holds its full state: let them all go, the root last.
        let mut resend = Vec::new();
        for (f, p) in fresh.iter().zip(&state.processes).rev() {
            for (index, own) in &f.threads {
                ptrace::detach(own.pid(), None).ctx(|| "letting a restored thread run".into())?;
                let t = &p.threads[*index];
                resend.extend(
                    own.take_stray_signals()
                        .into_iter()
                        .map(|s| (f.pid, own.pid(), s)),
                );
                resend.extend(t.pending_signals.iter().map(|s| (f.pid, own.pid(), *s)));
            }
            ptrace::detach(f.pid, None).ctx(|| "letting the restored process run".into())?;
            let leader = f.leader()?;
            resend.extend(
                leader
                    .take_stray_signals()
                    .into_iter()
                    .map(|s| (f.pid, f.pid, s)),
            );
            if let Some(l) = p.leader() {
                resend.extend(l.pending_signals.iter().map(|s| (f.pid, f.pid, *s)));
            }
        }
        for (pid, tid, s) in resend {
            let _ = crate::sys::signals::tgkill(pid, tid, s);
        }
        Ok(())
    }
}

/// Plant the trap, map the trampoline where neither layout has anything, drop the exec'd
/// mappings.
/// Put every member in its process group, now that all exist: a member joined its group when
/// it was forked, unless the group's leader was forked after it. Group 0 is the root's; when
/// that one is led from outside the pid namespace (its id reads 0 inside), members stay in
/// the group they were born in, which is the root's unless a parent left it before forking.
fn join_groups(fresh: &[Fresh], state: &JobState) -> Result<()> {
    let Some(root) = fresh.first() else {
        return Ok(());
    };
    let root_group = root.leader()?.call("getpgid", libc::SYS_getpgid, [0; 6])?;
    for (f, p) in fresh.iter().zip(&state.processes).skip(1) {
        let group = if p.pgid == 0 {
            root_group
        } else {
            p.pgid as u64
        };
        if group == 0 || group == p.pid as u64 {
            continue;
        }
        f.leader()?.call(
            &format!("joining pid {} to process group {group}", p.pid),
            libc::SYS_setpgid,
            [0, group, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

fn clear_one(f: &mut Fresh, p: &ProcessState) -> Result<()> {
    let pid = f.pid;
    let start_regs =
        ptrace::get_regs(pid).ctx(|| "reading the fresh process's registers".into())?;
    let entry = arch::instruction_pointer(&start_regs);
    ptrace::poke(pid, entry, arch::SYSCALL_TRAP).ctx(|| "planting the syscall trap".into())?;
    let mut inj = Injector::new(pid, entry, start_regs);
    if !f.kept.is_empty() {
        // A fork of the restorer, not an exec: its thread's rseq area goes with the
        // restorer's memory, and the image's is registered later (EBUSY while one is).
        let rseq = ptrace::get_rseq(pid).ctx(|| "reading the fresh process's rseq".into())?;
        if rseq.rseq_abi_pointer != 0 {
            inj.call(
                "rseq unregister",
                libc::SYS_rseq,
                [
                    rseq.rseq_abi_pointer,
                    u64::from(rseq.rseq_abi_size),
                    RSEQ_FLAG_UNREGISTER,
                    u64::from(rseq.signature),
                    0,
                    0,
                ],
            )?;
        }
    }
    f.present = current_vmas(pid)?;
    f.taken = f.present.iter().map(|v| (v.0, v.1)).collect();
    f.taken.extend(p.vmas.iter().map(|v| (v.start, v.end)));
    let tramp = free_gap(&f.taken, TRAMPOLINE).ok_or_else(|| {
        EngineError::Unrestorable("no free address range for the restore trampoline".into())
    })?;
    inj.call(
        "mmap of the trampoline",
        libc::SYS_mmap,
        [
            tramp,
            TRAMPOLINE,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )?;
    memory::write(pid, tramp, &arch::INJECTED_CODE).ctx(|| "writing the trampoline".into())?;
    inj.set_code(tramp);
    f.tramp = tramp;
    f.scratch = Scratch {
        addr: tramp + PAGE,
        len: TRAMPOLINE - PAGE,
    };
    // One stop per batch: a root forked from the restorer has its hundred-odd mappings.
    let unmaps: Vec<Call> = f
        .present
        .iter()
        .filter(|(_, _, name)| !mem::is_special_name(name) && name != "[vsyscall]")
        .flat_map(|(s, e, _)| f.kept.gaps_in(*s, *e).ranges().to_vec())
        .map(|r| Call::new(libc::SYS_munmap, [r.start, r.end - r.start, 0, 0, 0, 0]))
        .collect();
    inj.batch_call("munmap", &f.scratch, 0, &unmaps)?;
    f.taken.push((tramp, tramp + TRAMPOLINE));
    f.leader = Some(inj);
    Ok(())
}

/// Process-wide kernel state, then the leader's own thread state.
fn kernel_one(f: &Fresh, p: &ProcessState, own_pid: i32, unpinned: Option<&CpuSet>) -> Result<()> {
    let (inj, scratch, pid) = (f.leader()?, &f.scratch, f.pid);
    let leader_state = p.leader().ok_or_else(|| invalid("no leader thread"))?;
    // Nothing may be delivered while the restore still drives the process; the threads
    // created next inherit this mask.
    ptrace::set_sigmask(pid, u64::MAX).ctx(|| "blocking signals".into())?;
    mem::protect_vmas(inj, scratch, &p.vmas)?;
    madvise::apply(inj, &p.vmas)?;
    signals::apply_actions(inj, scratch, &p.sigactions)?;
    task::apply_mm(inj, scratch, &p.mm, f.exe_fd)?;
    if let Some(fd) = f.exe_fd {
        inj.call("close", libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])?;
    }
    thread::apply_leader(inj, scratch, leader_state)?;
    thread::apply_affinity(pid, leader_state, unpinned);
    let cloexec: Vec<Call> = (p.fds.iter().filter(|f| f.cloexec))
        .map(|f| {
            let (set, on) = (libc::F_SETFD as u64, libc::FD_CLOEXEC as u64);
            Call::new(libc::SYS_fcntl, [f.fd as u64, set, on, 0, 0, 0])
        })
        .collect();
    inj.batch_call("fcntl(F_SETFD)", scratch, 0, &cloexec)?;
    task::apply_rlimits(pid, &p.rlimits)?;
    attrs::apply_process(inj, pid, &p.attrs)?;
    signals::apply_queued(inj, scratch, own_pid, None, &p.queued_signals)?;
    signals::apply_queued(
        inj,
        scratch,
        own_pid,
        Some(own_pid),
        &leader_state.queued_signals,
    )
}

/// Create the process's other threads, each with its state; then its timers (which may signal
/// any thread), and take back the capability lent for the threads.
fn threads_one(
    f: &mut Fresh,
    p: &ProcessState,
    (own_pid, exact): (i32, bool),
    unpinned: Option<&CpuSet>,
    created: &mut Vec<Pid>,
) -> Result<()> {
    let inherited = p.leader().map(|l| l.name.as_str()).unwrap_or_default();
    for index in 1..p.threads.len() {
        let t = &p.threads[index];
        let leader = f.leader()?;
        let outer = thread::create(leader, &f.scratch, t, exact)?;
        created.push(outer);
        let base = ptrace::get_regs(outer)
            .ctx(|| format!("reading the registers of the new thread {}", t.tid))?;
        let mut own = Injector::new(outer, f.tramp, base);
        own.set_code(f.tramp);
        thread::apply_injected(&own, &f.scratch, t, inherited)?;
        thread::apply_affinity(outer, t, unpinned);
        // Without a pid namespace the process sees our ids.
        let seen = if exact { t.tid } else { outer.as_raw() };
        signals::apply_queued(leader, &f.scratch, own_pid, Some(seen), &t.queued_signals)?;
        f.threads.push((index, own));
    }
    let tid_of = |tid: i32| {
        if tid == p.pid {
            return Some(own_pid);
        }
        let index = p.threads.iter().position(|t| t.tid == tid)?;
        if exact {
            return Some(tid);
        }
        f.threads
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, own)| own.pid().as_raw())
    };
    timers::apply(f.leader()?, &f.scratch, &p.itimers, &p.posix_timers, tid_of)?;
    if f.lent_capability {
        thread::drop_capabilities(f.leader()?, &f.scratch)?;
        for (_, own) in &f.threads {
            thread::drop_capabilities(own, &f.scratch)?;
        }
    }
    for (index, own) in &f.threads {
        attrs::apply_no_new_privs(own, &p.threads[*index].attrs)?;
    }
    if let Some(leader) = p.leader() {
        attrs::apply_no_new_privs(f.leader()?, &leader.attrs)?;
    }
    Ok(())
}

fn invalid(what: &str) -> EngineError {
    EngineError::Unrestorable(format!(
        "restore stages out of order: {what} (a bug in mrun)"
    ))
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| EngineError::Unrestorable(format!("path {s:?} contains a NUL byte")))
}

/// The executable to exec: the image's own if it is still the same file, so that
/// `/proc/PID/exe` stays right; otherwise this program (its mappings are all replaced anyway).
fn executable(state: &ProcessState, same_machine: bool) -> Result<CString> {
    let same = std::fs::metadata(&state.exe)
        .map(|m| crate::resource::same_file(&state.exe_identity, &m, same_machine, true))
        .unwrap_or(false);
    if same {
        return cstring(&state.exe);
    }
    let me = std::env::current_exe().ctx(|| "finding this program's path".into())?;
    cstring(&me.to_string_lossy())
}

fn check_file_identities(vmas: &[Vma], same_machine: bool) -> Result<()> {
    for v in vmas {
        if let Backing::File { path, identity, .. } = &v.backing {
            let meta = std::fs::metadata(path).map_err(|e| {
                EngineError::Unrestorable(format!("the mapped file {path} cannot be used: {e}"))
            })?;
            // A file mapped shared and writable is written by the job (and maybe by others)
            // through the mapping: the same file, whatever its bytes are now.
            let written = v.shared && v.prot & libc::PROT_WRITE as u32 != 0;
            if !crate::resource::same_file(identity, &meta, same_machine, !written) {
                return Err(EngineError::Unrestorable(format!(
                    "the mapped file {path} changed since the checkpoint; restoring would run different code or data"
                )));
            }
        }
    }
    Ok(())
}

/// A kept page the image does not name held something when it was sent and holds nothing
/// now (the image leaves out pages that hold nothing): give it back to the kernel, zero.
fn zero_unnamed(inj: &Injector, kept: &RangeSet, named: &RangeSet) -> Result<()> {
    for r in kept.minus(named).ranges() {
        inj.call(
            "madvise(MADV_DONTNEED) of a page no longer in use",
            libc::SYS_madvise,
            [
                r.start,
                r.end - r.start,
                libc::MADV_DONTNEED as u64,
                0,
                0,
                0,
            ],
        )?;
    }
    Ok(())
}

/// The parts of the held ranges that the fresh process can keep as they are: those inside
/// its private anonymous areas (not a stack that grows down: a mapping made here cannot be
/// given that).
fn adoptable(held: &RangeSet, vmas: &[Vma]) -> RangeSet {
    let areas: RangeSet = vmas
        .iter()
        .filter(|v| !v.shared && !v.grows_down && matches!(v.backing, Backing::Anonymous))
        .map(|v| v.start..v.end)
        .collect();
    held.and(&areas)
}

/// `(start, end, name)` of the fresh process's mappings.
fn current_vmas(pid: Pid) -> Result<Vec<(u64, u64, String)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ctx(|| format!("reading /proc/{pid}/maps"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let Some((s, e)) = cols.next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let name = cols.nth(4).unwrap_or("").to_string();
        if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
            out.push((s, e, name));
        }
    }
    Ok(out)
}

/// The lowest address at or above `LOWEST` where `len` bytes (plus a guard page each side)
/// overlap none of `taken`.
fn free_gap(taken: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = taken.to_vec();
    ranges.sort_unstable();
    let mut candidate = LOWEST;
    for (s, e) in ranges {
        if e <= candidate {
            continue;
        }
        if s >= candidate + len + 2 * PAGE {
            break;
        }
        candidate = (e + PAGE).max(candidate);
    }
    let at = candidate + PAGE;
    (at + len < HIGHEST).then_some(at)
}

/// Move the kernel's special mappings (vvar, vvar_vclock, vdso) of the fresh process to where
/// the image had them, keeping their order; via a free area so no move overlaps another.
fn move_specials(
    inj: &Injector,
    present: &[(u64, u64, String)],
    image: &[Vma],
    taken: &[(u64, u64)],
) -> Result<()> {
    let wanted = mem::specials(image);
    let here: Vec<&(u64, u64, String)> = present
        .iter()
        .filter(|v| mem::is_special_name(&v.2))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let total: u64 = here.iter().map(|v| v.1 - v.0).sum();
    let mut taken = taken.to_vec();
    taken.extend(here.iter().map(|v| (v.0, v.1)));
    let temp = free_gap(&taken, total).ok_or_else(|| {
        EngineError::Unrestorable("no free address range to move the vDSO through".into())
    })?;
    let mut at = temp;
    let mut staged = Vec::new();
    for v in &here {
        let len = v.1 - v.0;
        inj.call(
            "mremap of a vDSO area",
            libc::SYS_mremap,
            [
                v.0,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                at,
                0,
            ],
        )
        .map_err(|e| sealed_hint(e, &v.2))?;
        staged.push((v.2.clone(), at, len));
        at += len;
    }
    for (name, from, len) in staged {
        let Some((_, to, _)) = wanted.iter().find(|w| w.0 == name) else {
            return Err(EngineError::Incompatible(format!(
                "the image has no {name} mapping but this kernel does"
            )));
        };
        inj.call(
            "mremap of a vDSO area",
            libc::SYS_mremap,
            [
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                *to,
                0,
            ],
        )
        .map_err(|e| sealed_hint(e, &name))?;
    }
    Ok(())
}

fn sealed_hint(e: EngineError, name: &str) -> EngineError {
    match e {
        EngineError::Os { source, .. } if source.raw_os_error() == Some(libc::EPERM) => EngineError::Incompatible(format!(
            "this kernel seals its system mappings ({name} cannot be moved, CONFIG_MSEAL_SYSTEM_MAPPINGS); restore is not possible here"
        )),
        other => other,
    }
}
