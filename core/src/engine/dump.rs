//! Checkpoint: freeze a job (a process and all its descendants), capture it into an image
//! stream, then end it (or let it run on). Any refusal or failure before the image is complete
//! leaves every process of it running untouched.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use procfs::process::{MMPermissions, MMapPath, Process};

use super::checks;
use super::compat;
use super::error::{Context, EngineError, Result};
use super::freeze::Frozen;
use super::precopy::{Precopied, Sent};
use super::refusal::Refusal;
use super::tree::{FrozenTree, Ids};
use crate::image::model::{
    Fd, FdKind, Header, JobState, ProcessState, SigAction, ThreadState, Vma, Zombie,
};
use crate::image::{Compression, ImageWriter};
use crate::resource::task::Injected;
use crate::resource::timers::{self, Timers};
use crate::resource::{fds, identity_of, mem, signals, task, thread};
use crate::sys::Pid;

#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// Whether page data is compressed.
    pub compression: Compression,
    /// Let the process continue after the checkpoint instead of ending it.
    pub leave_running: bool,
    /// Send the memory ahead while the process still runs, in rounds, before freezing it
    /// (where the kernel allows; see [`super::precopy`]): [`crate::transfer`] for a move,
    /// [`checkpoint`] for `mrunctl checkpoint --pre-copy`.
    pub precopy: bool,
    /// A process (mrun's deputy) whose stdin/stdout/stderr the checkpointed process shares:
    /// those of its fds 0-2 that are the very same open files are carried as stdio streams,
    /// so the restored copy writes through the deputy and a shared file offset stays shared.
    pub share_stdio_with: Option<Pid>,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            compression: Compression::Auto(crate::image::DEFAULT_LEVEL),
            leave_running: false,
            precopy: false,
            share_stdio_with: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DumpStats {
    pub processes: usize,
    pub pages: u64,
    pub vmas: usize,
    pub fds: usize,
    pub threads: usize,
}

/// Checkpoint `pid` into `out`. On success the process has been killed (or, with
/// `leave_running`, resumed); on any error it keeps running as if nothing happened.
pub fn checkpoint<W: Write>(pid: Pid, mut out: W, opts: &DumpOptions) -> Result<DumpStats> {
    let precopied = match opts.precopy {
        true => {
            // What /proc already shows would refuse it: say so before writing its memory.
            if let Some(why) = super::predict::refusal(pid, opts.share_stdio_with) {
                return Err(EngineError::Refused(why));
            }
            super::precopy::run(pid, &mut out, opts.compression, &mut |w| w.flush())?
        }
        false => None,
    };
    let held = dump_precopied(pid, out, opts, precopied)?;
    let stats = held.stats.clone();
    if opts.leave_running {
        held.resume()?;
    } else {
        held.kill()?;
    }
    Ok(stats)
}

/// A process whose complete image has been written and which is still frozen: the caller
/// decides its fate once the image is safely elsewhere. Dropping it resumes the process.
pub struct Checkpointed {
    frozen: FrozenTree,
    pub stats: DumpStats,
    /// Given back (its write-protection undone) once the process is ended or runs again:
    /// undoing it costs time the frozen process need not wait for.
    precopied: Option<Precopied>,
}

impl Checkpointed {
    /// The image lives on: end the original.
    pub fn kill(self) -> Result<()> {
        let Checkpointed {
            frozen, precopied, ..
        } = self;
        let ended = frozen.kill();
        drop(precopied);
        ended
    }

    /// The image was not used: let the original run on, untouched.
    pub fn resume(self) -> Result<()> {
        let Checkpointed {
            frozen, precopied, ..
        } = self;
        drop(precopied);
        frozen.resume()
    }
}

/// Freeze `pid` and write its complete image into `out`, leaving it frozen. On any error the
/// process keeps running as if nothing happened.
pub fn dump<W: Write>(pid: Pid, out: W, opts: &DumpOptions) -> Result<Checkpointed> {
    dump_precopied(pid, out, opts, None)
}

/// As [`dump`] after pre-copy rounds ([`super::precopy::run`]) sent `precopied` ahead on the
/// same stream: the pages sent and not written since are named, not carried.
pub fn dump_precopied<W: Write>(
    pid: Pid,
    out: W,
    opts: &DumpOptions,
    mut precopied: Option<Precopied>,
) -> Result<Checkpointed> {
    let mut trace = crate::trace::Trace::new("checkpoint");
    checks::preflight(pid)?;
    let mut frozen = FrozenTree::seize(pid)?;
    trace.mark("freeze");
    let sent = precopied.as_mut().and_then(|p| p.at_freeze(&mut trace));
    if precopied.is_some() {
        trace.mark("dirty pages");
    }
    let stats = capture(&mut frozen, out, opts, sent.as_ref(), &mut trace)?;
    Ok(Checkpointed {
        frozen,
        stats,
        precopied,
    })
}

/// The scratch area mapped in each process while its state is asked for: room for the
/// dispositions of every signal and the table of the batch that reads them.
const SCRATCH_LEN: u64 = 16 * 1024;

/// Where injected system calls run: the start of an executable file mapping of `pid`.
pub(crate) fn trap_site(pid: Pid) -> Result<u64> {
    let maps = Process::new(pid.as_raw())?.maps()?;
    maps.iter()
        .filter(|m| {
            m.perms.contains(MMPermissions::EXECUTE)
                && m.address.1 - m.address.0 >= crate::arch::INJECTED_CODE.len() as u64
        })
        .find(|m| matches!(m.pathname, MMapPath::Path(_)))
        .or_else(|| {
            maps.iter().find(|m| {
                m.perms.contains(MMPermissions::EXECUTE)
                    && !matches!(m.pathname, MMapPath::Vdso | MMapPath::Vsyscall)
            })
        })
        .map(|m| m.address.0)
        .ok_or_else(|| Refusal::NoExecutableMapping { pid }.into())
}

/// What only the process itself can tell, asked through injected syscalls: dispositions, brk
/// and umask from the leader, then each thread's own state, then the timers (which name
/// threads).
fn capture_injected(
    frozen: &mut Frozen,
    unpinned: &thread::UnpinnedSets,
) -> Result<(Vec<SigAction>, Injected, Vec<ThreadState>, Timers)> {
    let pid = frozen.pid();
    frozen.plant(trap_site(pid)?)?;
    let scratch = frozen.map_scratch(SCRATCH_LEN)?;
    let asked = (|| -> Result<_> {
        let leader = frozen.leader();
        let actions = signals::capture_actions(leader, &scratch)?;
        let process = task::capture_injected(leader, &scratch)?;
        let mut threads = Vec::with_capacity(frozen.threads().len());
        for t in frozen.threads() {
            threads.push(thread::capture(
                pid,
                &t.injector,
                &scratch,
                &t.regs,
                unpinned,
            )?);
        }
        let ids: Vec<(Pid, i32)> = frozen
            .threads()
            .iter()
            .zip(&threads)
            .map(|(f, t)| (f.tid, t.tid))
            .collect();
        let timers = timers::capture(leader, &scratch, pid, &ids)?;
        Ok((actions, process, threads, timers))
    })();
    frozen.unmap_scratch(scratch)?;
    frozen.unplant()?;
    let (actions, process, mut threads, timers) = asked?;
    for (i, t) in threads.iter_mut().enumerate() {
        t.pending_signals = frozen.pending_signals(i);
    }
    Ok((actions, process, threads, timers))
}

fn capture<W: Write>(
    tree: &mut FrozenTree,
    out: W,
    opts: &DumpOptions,
    precopied: Option<&Sent>,
    trace: &mut crate::trace::Trace,
) -> Result<DumpStats> {
    let mut ends = fds::Held::default();
    let mut links = Vec::with_capacity(tree.members.len());
    for m in &tree.members {
        links.push(fds::list(m.frozen.pid(), &mut ends)?);
    }
    let unpinned = thread::UnpinnedSets::read();
    let mut files = fds::FileTable::default();
    let mut shared = mem::SharedTable::default();
    let mut processes = Vec::with_capacity(tree.members.len());
    for (i, links) in links.into_iter().enumerate() {
        let ids = job_ids(tree, i)?;
        let frozen = &mut tree.members[i].frozen;
        let pid = frozen.pid();
        let (sigactions, process, threads, timers) = capture_injected(frozen, &unpinned)?;
        let fds = fds::capture(pid, links, &ends, &mut files, opts.share_stdio_with)?;
        let vmas = mem::capture_vmas(pid, i as u32, &mut shared)?;
        processes.push(process_state(
            pid,
            ids,
            sigactions,
            process,
            threads,
            (fds, vmas),
            timers,
        )?);
    }
    files.finish()?;
    let Some(root) = processes.first() else {
        return Err(EngineError::Died {
            pid: tree.root().as_raw(),
            stage: "capture",
        });
    };
    let Some(leader) = root.leader() else {
        return Err(EngineError::Died {
            pid: tree.root().as_raw(),
            stage: "capture",
        });
    };
    let header = Header {
        compat: compat::local(leader.xstate.len() as u32)?,
        pid: root.pid,
        comm: leader.name.clone(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        writer: format!("mrun {}", env!("CARGO_PKG_VERSION")),
        boot_id: crate::resource::boot_id(),
    };
    let mut zombies = Vec::with_capacity(tree.zombies.len());
    for (pid, z) in &tree.zombies {
        let (pid, ppid, pgid, sid) = ids_in_job(tree, *pid, z.inner, Some(z.parent))?;
        zombies.push(Zombie {
            pid,
            ppid,
            pgid,
            sid,
            status: z.status,
        });
    }
    refuse_unlinked_mapped_shared(&processes, &files.files, &shared)?;
    let mut leaderless_groups: Vec<i32> = processes
        .iter()
        .map(|p| p.pgid)
        .chain(zombies.iter().map(|z| z.pgid))
        .filter(|g| {
            *g != 0
                && !processes.iter().any(|p| p.pid == *g)
                && !zombies.iter().any(|z| z.pid == *g)
        })
        .collect();
    leaderless_groups.sort_unstable();
    leaderless_groups.dedup();
    let state = JobState {
        leaderless_groups,
        shared: shared.objects.clone(),
        zombies,
        processes,
        files: files.files,
    };
    trace.mark("state");
    let mut writer = ImageWriter::new(out, &header, opts.compression)?;
    if let Some(m) = precopied.and_then(|s| s.measured.clone()) {
        writer.carry_on(m);
    }
    writer.write_state(&state)?;
    let mut stats = DumpStats {
        processes: state.processes.len(),
        ..DumpStats::default()
    };
    for (i, (m, p)) in tree.members.iter().zip(&state.processes).enumerate() {
        // Pre-copy covers the first process only.
        let sent = precopied.filter(|_| i == 0);
        stats.pages += mem::dump_pages(
            m.frozen.pid(),
            i as u32,
            (&shared, sent),
            &p.vmas,
            &mut writer,
        )?;
        stats.vmas += p.vmas.len();
        stats.fds += p.fds.len();
        stats.threads += p.threads.len();
    }
    trace.mark("pages");
    writer.finish()?;
    trace.mark("finish");
    Ok(stats)
}

/// A file with no name that is both held open and mapped shared would come back as two files
/// (the open file and the shared memory object): refused until they are made one.
fn refuse_unlinked_mapped_shared(
    processes: &[ProcessState],
    files: &[FdKind],
    shared: &mem::SharedTable,
) -> Result<()> {
    for (i, f) in files.iter().enumerate() {
        let FdKind::Unlinked {
            dev,
            ino,
            memfd,
            name,
            ..
        } = f
        else {
            continue;
        };
        if !shared.holds(*dev, *ino) {
            continue;
        }
        let holder = processes.iter().find_map(|p| {
            let fd = p.fds.iter().find(|d| d.file as usize == i)?;
            Some((p.pid, fd.fd))
        });
        let (pid, fd) = holder.unwrap_or((0, -1));
        let what = if *memfd { "a memfd" } else { "a deleted file" };
        return Err(Refusal::Descriptor {
            pid: Pid::from_raw(pid),
            fd,
            what: format!("{what} ({name}) that is also mapped shared"),
        }
        .into());
    }
    Ok(())
}

/// `(pid, ppid, pgid, sid)` of member `i` as the job knows them: the parent's pid (0 for the
/// root); a group or session led by a member keeps its leader's pid, the root's own group or
/// session (led from outside the job) is 0, any other one is refused.
fn job_ids(tree: &FrozenTree, i: usize) -> Result<(i32, i32, i32, i32)> {
    let Some(m) = tree.members.get(i) else {
        return Err(EngineError::Died {
            pid: tree.root().as_raw(),
            stage: "capture",
        });
    };
    ids_in_job(tree, m.frozen.pid(), m.inner, m.parent)
}

/// As [`job_ids`], for any process of the tree given its own ids and its parent's index.
fn ids_in_job(
    tree: &FrozenTree,
    pid: Pid,
    inner: Ids,
    parent: Option<usize>,
) -> Result<(i32, i32, i32, i32)> {
    let Some(root) = tree.members.first() else {
        return Err(EngineError::Died {
            pid: tree.root().as_raw(),
            stage: "capture",
        });
    };
    let member = |id: i32| {
        tree.members.iter().any(|o| o.inner.pid == id)
            || tree.zombies.iter().any(|(_, z)| z.inner.pid == id)
    };
    let map = |id: i32, outside: i32, what: &'static str| -> Result<i32> {
        if id != 0 && member(id) {
            Ok(id)
        } else if id == 0 || id == outside {
            Ok(0)
        } else if !crate::sys::process::pid_in_use(tree.root(), id) {
            Err(Refusal::ExitedLeader {
                pid,
                what,
                leader: id,
            }
            .into())
        } else {
            Err(Refusal::LedFromOutside {
                pid,
                what,
                leader: id,
            }
            .into())
        }
    };
    let ppid = parent
        .and_then(|p| tree.members.get(p))
        .map(|p| p.inner.pid)
        .unwrap_or(0);
    let sid = map(inner.sid, root.inner.sid, "session")?;
    let pgid = match map(inner.pgid, root.inner.pgid, "process group") {
        // A group whose leader has exited lives on in its other members: inside the root's
        // session, the restore makes it again (see `JobState::leaderless_groups`).
        Err(EngineError::Refused(Refusal::ExitedLeader { .. })) if sid == 0 => inner.pgid,
        other => other?,
    };
    Ok((inner.pid, ppid, pgid, sid))
}

fn process_state(
    pid: Pid,
    (own_pid, ppid, pgid, sid): (i32, i32, i32, i32),
    sigactions: Vec<SigAction>,
    process: Injected,
    threads: Vec<ThreadState>,
    (fds, vmas): (Vec<Fd>, Vec<Vma>),
    timers: Timers,
) -> Result<ProcessState> {
    let procfs = Process::new(pid.as_raw())?;
    let exe = procfs.exe()?;
    let exe_meta =
        std::fs::metadata(format!("/proc/{pid}/exe")).ctx(|| format!("stat of /proc/{pid}/exe"))?;
    let personality = std::fs::read_to_string(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    let mut state = ProcessState {
        pid: own_pid,
        ppid,
        pgid,
        sid,
        exe: exe.to_string_lossy().into_owned(),
        exe_identity: identity_of(&exe_meta),
        threads,
        sigactions,
        personality,
        mm: task::capture_mm(pid, process.brk)?,
        cwd: procfs.cwd()?.to_string_lossy().into_owned(),
        umask: process.umask,
        rlimits: task::capture_rlimits(pid)?,
        vmas,
        fds,
        queued_signals: signals::capture_queued(pid, true)?,
        attrs: process.attrs,
        itimers: timers.itimers,
        posix_timers: timers.posix,
    };
    timers::claim_queued(&mut state.posix_timers, &mut state.queued_signals);
    for t in &mut state.threads {
        timers::claim_queued(&mut state.posix_timers, &mut t.queued_signals);
    }
    Ok(state)
}
