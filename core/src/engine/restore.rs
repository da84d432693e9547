//! Restore: bring an image back to life in a fresh process, stage by stage. The process runs
//! only after the whole image was read and verified; any failure before that kills it and
//! nothing of it ever ran.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::RawFd;

use nix::sys::signal::{kill, Signal};

use super::compat;
use super::error::{Context, EngineError, Result};
use super::inject::{Injector, Scratch};
use super::spawn::{self, ChildPlan};
use crate::arch;
use crate::image::model::{Backing, Header, ProcessState, Vma};
use crate::image::ImageReader;
use crate::resource::{fds, mem, signals, task};
use crate::sys::{memory, ns, ptrace, Pid};

/// Size of the area that holds the syscall trap and scratch space during a restore.
const TRAMPOLINE: u64 = 64 * 1024;
const PAGE: u64 = 4096;
const LOWEST: u64 = 0x1000_0000;
const HIGHEST: u64 = 0x7fff_ffff_0000;

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
}

/// The stages of a restore, in order. Each stage's work is undone by killing the fresh
/// process, which the [`spawn::Spawned`] guard does on any error.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Read and check the header: architecture, xsave layout and vDSO must match.
    Header,
    /// Open the image's files here and create the fresh process, stopped at its exec.
    Spawn,
    /// Map the trap/scratch area at a place free in both layouts; drop the exec'd mappings.
    Clear,
    /// Move `[vvar]`, `[vvar_vclock]` and `[vdso]` to the image's addresses.
    Specials,
    /// Map the image's memory areas and stream the pages into them.
    Memory,
    /// Final protections, signals, mm fields, rseq, robust list, name, fd flags, rlimits.
    Kernel,
    /// Registers, xstate, signal mask; unmap the trap; let it run.
    Run,
}

pub fn restore<R: Read>(input: R, opts: &RestoreOptions) -> Result<Restored> {
    let mut stage = Stage::Header;
    let r = run(input, opts, &mut stage);
    r.map_err(|e| match e {
        EngineError::Os { what, source } => EngineError::Os {
            what: format!("{what} (restore stage {stage:?})"),
            source,
        },
        other => other,
    })
}

fn run<R: Read>(input: R, opts: &RestoreOptions, stage: &mut Stage) -> Result<Restored> {
    let mut trace = crate::trace::Trace::new("restore");
    let (mut reader, header) = ImageReader::open(input)?;
    let here = compat::local(header.compat.xstate_size)?;
    compat::check(&header.compat, &here)?;
    let state = reader.read_state()?;

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Spawn;
    let same_machine = header.boot_id == crate::resource::boot_id();
    let prepared = fds::prepare(&state.fds, opts.stdio, same_machine)?;
    let plan = ChildPlan {
        exe: executable(&state, same_machine)?,
        cwd: cstring(&state.cwd)?,
        umask: state.umask,
        personality: state.personality,
        fds: prepared.plan.clone(),
        own_process_group: opts.own_process_group,
    };
    // Threads first: none can be created once the pid namespace is unshared.
    reader.start_workers()?;
    if opts.original_pid {
        ns::unshare_pid_namespace().map_err(|e| {
            EngineError::Unrestorable(format!(
                "cannot create a pid namespace to give the process its original pid {} ({e}); \
             enable user namespaces or restore with a new pid",
                header.pid
            ))
        })?;
    }
    let child = spawn::spawn(&plan, header.pid, opts.original_pid)?;
    drop(prepared);
    let pid = child.pid;
    let xstate_here =
        ptrace::get_xstate(pid).ctx(|| "reading the fresh process's xstate".into())?;
    if xstate_here.len() != state.xstate.len() {
        return Err(EngineError::Incompatible(format!(
            "the image is incompatible with this machine: its xsave area is {} bytes, this CPU's is {}",
            state.xstate.len(),
            xstate_here.len()
        )));
    }

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Clear;
    let start_regs =
        ptrace::get_regs(pid).ctx(|| "reading the fresh process's registers".into())?;
    let entry = arch::instruction_pointer(&start_regs);
    ptrace::poke(pid, entry, arch::SYSCALL_TRAP).ctx(|| "planting the syscall trap".into())?;
    let mut inj = Injector::new(pid, entry, start_regs);
    let present = current_vmas(pid)?;
    let mut taken: Vec<(u64, u64)> = present.iter().map(|v| (v.0, v.1)).collect();
    taken.extend(state.vmas.iter().map(|v| (v.start, v.end)));
    let tramp = free_gap(&taken, TRAMPOLINE).ok_or_else(|| {
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
    memory::write(pid, tramp, &arch::SYSCALL_TRAP.to_le_bytes())
        .ctx(|| "writing the trampoline".into())?;
    inj.set_site(tramp);
    let scratch = Scratch {
        addr: tramp + PAGE,
        len: TRAMPOLINE - PAGE,
    };
    for (s, e, name) in &present {
        if !mem::is_special_name(name) && name != "[vsyscall]" {
            inj.call("munmap", libc::SYS_munmap, [*s, e - s, 0, 0, 0, 0])?;
        }
    }

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Specials;
    taken.push((tramp, tramp + TRAMPOLINE));
    move_specials(&inj, &present, &state.vmas, &taken)?;

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Memory;
    check_file_identities(&state.vmas, same_machine)?;
    mem::map_vmas(&inj, &scratch, &state.vmas)?;
    let mut buf = Vec::new();
    while let Some(addr) = reader.next_pages(&mut buf)? {
        memory::write(pid, addr, &buf).ctx(|| format!("writing pages at {addr:#x}"))?;
    }

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Kernel;
    // Nothing may be delivered while the restore still drives the process.
    ptrace::set_sigmask(pid, u64::MAX).ctx(|| "blocking signals".into())?;
    mem::protect_vmas(&inj, &state.vmas)?;
    signals::apply(&inj, &scratch, &state.sigactions, &state.altstack)?;
    task::apply_injected(
        &inj,
        &scratch,
        &state.mm,
        state.robust_list,
        state.clear_child_tid,
        state.rseq.as_ref(),
        &header.comm,
    )?;
    for fd in &prepared_cloexec(&state) {
        inj.call(
            "fcntl(F_SETFD)",
            libc::SYS_fcntl,
            [
                *fd as u64,
                libc::F_SETFD as u64,
                libc::FD_CLOEXEC as u64,
                0,
                0,
                0,
            ],
        )?;
    }
    task::apply_rlimits(pid, &state.rlimits)?;
    let own_pid = if opts.original_pid {
        header.pid
    } else {
        pid.as_raw()
    };
    signals::apply_queued(&inj, &scratch, own_pid, &state.queued_signals)?;

    trace.mark(&format!("{stage:?}"));
    *stage = Stage::Run;
    inj.call_last(
        "munmap of the trampoline",
        libc::SYS_munmap,
        [tramp, TRAMPOLINE, 0, 0, 0, 0],
    )?;
    ptrace::set_xstate(pid, &state.xstate).ctx(|| "setting the FPU/AVX state".into())?;
    ptrace::set_regs(pid, arch::from_image(&state.regs)).ctx(|| "setting the registers".into())?;
    ptrace::set_sigmask(pid, state.sigmask).ctx(|| "setting the signal mask".into())?;
    ptrace::detach(pid, None).ctx(|| "letting the restored process run".into())?;
    let mut stray = inj.take_stray_signals();
    stray.extend(&state.pending_signals);
    for s in stray {
        if let Ok(sig) = Signal::try_from(s) {
            let _ = kill(pid, sig);
        }
    }
    trace.mark("Run");
    let (pid, reaper) = child.release();
    Ok(Restored {
        pid,
        reaper,
        header,
    })
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s)
        .map_err(|_| EngineError::Unrestorable(format!("path {s:?} contains a NUL byte")))
}

fn prepared_cloexec(state: &ProcessState) -> Vec<RawFd> {
    state
        .fds
        .iter()
        .filter(|f| f.cloexec)
        .map(|f| f.fd)
        .collect()
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
            if !crate::resource::same_file(identity, &meta, same_machine, true) {
                return Err(EngineError::Unrestorable(format!(
                    "the mapped file {path} changed since the checkpoint; restoring would run different code or data"
                )));
            }
        }
    }
    Ok(())
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
