//! Timers of a process: the three interval timers (`setitimer`) and its POSIX timers
//! (`timer_create`), all process-wide (they live in the kernel's `signal_struct`). Both are read
//! and set by syscalls run inside the process: `getitimer`, `timer_gettime` and
//! `timer_getoverrun` at the checkpoint (`/proc/PID/timers` lists the POSIX timers with their
//! clock and notification), `setitimer`, `timer_create` and `timer_settime` at the restore.
//! Never handled here: a timer signal already queued, which travels with the signal queues
//! (`super::signals`); timerfds, which are descriptors.
//!
//! Time is carried in each clock's own sense. A monotonic or CPU-time timer fires the same
//! distance (of its clock) after the restore as it would have after the checkpoint: the time
//! the process spent frozen does not count, as for a stopped process's CPU clock. A wall-clock
//! timer (`CLOCK_REALTIME`, `CLOCK_REALTIME_ALARM`, `CLOCK_TAI`) keeps its deadline in that
//! clock's time: it is armed with `TIMER_ABSTIME` at the deadline measured at the checkpoint, so
//! it fires when it would have without the move, at once (with overruns counted by the kernel
//! for a periodic one) if that moment passed meanwhile.

use crate::engine::error::{EngineError, Result};
use crate::engine::inject::{u64_at, Call, Injector, Scratch};
use crate::engine::Refusal;
use crate::image::model::{IntervalTimer, PosixTimer, QueuedSignal};
use crate::sys::Pid;

const SIGEV_THREAD_ID: i32 = 4;
const TIMER_ABSTIME: u64 = 1;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const PR_TIMER_CREATE_RESTORE_IDS_OFF: u64 = 0;
const PR_TIMER_CREATE_RESTORE_IDS_ON: u64 = 1;
/// On kernels without `PR_TIMER_CREATE_RESTORE_IDS` ids come from a per-process counter: at most
/// this many timers are created and deleted to move it to a wanted id.
const MAX_PLACEHOLDERS: i64 = 1 << 16;
const NS: u64 = 1_000_000_000;

/// Scratch layout: the `itimerspec`/`itimerval` (32 bytes), the `sigevent` (64), the timer id,
/// a `timespec`.
const AT_TIMES: u64 = 0;
/// Where the interval timers' batch table goes: after their three values.
const ITIMERS_TABLE_AT: u64 = 256;
const AT_SIGEVENT: u64 = 64;
const AT_ID: u64 = 128;
const AT_NOW: u64 = 192;

/// The timers of one process, as captured.
#[derive(Debug, Default)]
pub struct Timers {
    pub itimers: Vec<IntervalTimer>,
    pub posix: Vec<PosixTimer>,
}

/// One entry of `/proc/PID/timers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: i32,
    pub signo: i32,
    pub value: u64,
    /// `sigev_notify` as the kernel keeps it (see [`PosixTimer::notify`]).
    pub notify: i32,
    /// The process (or, with `SIGEV_THREAD_ID`, the thread) signalled, in the pid namespace
    /// of the `/proc` that was read.
    pub target: i32,
    pub clock: i32,
}

/// Parse `/proc/PID/timers`: blocks of `ID:`, `signal: SIGNO/VALUE`, `notify: KIND/pid.N` (or
/// `tid.N`), `ClockID:` lines, newest first; returned in ascending id order.
pub fn parse_listing(text: &str) -> std::result::Result<Vec<Listed>, String> {
    let mut out: Vec<Listed> = Vec::new();
    for line in text.lines() {
        let (key, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("unexpected line {line:?}"))?;
        let rest = rest.trim();
        let bad = || format!("unexpected line {line:?}");
        if key == "ID" {
            out.push(Listed {
                id: rest.parse().map_err(|_| bad())?,
                signo: 0,
                value: 0,
                notify: 0,
                target: 0,
                clock: 0,
            });
            continue;
        }
        let t = out.last_mut().ok_or_else(bad)?;
        match key {
            "signal" => {
                let (signo, value) = rest.split_once('/').ok_or_else(bad)?;
                t.signo = signo.parse().map_err(|_| bad())?;
                let value = value.trim_start_matches("0x");
                t.value = u64::from_str_radix(value, 16).map_err(|_| bad())?;
            }
            "notify" => {
                let (kind, target) = rest.split_once('/').ok_or_else(bad)?;
                let (scope, id) = target.split_once('.').ok_or_else(bad)?;
                t.notify = match kind {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    _ => return Err(bad()),
                };
                match scope {
                    "tid" => t.notify |= SIGEV_THREAD_ID,
                    "pid" => {}
                    _ => return Err(bad()),
                }
                t.target = id.parse().map_err(|_| bad())?;
            }
            "ClockID" => t.clock = rest.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        }
    }
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// Why a timer on `clock` cannot be restored faithfully, if it cannot: a thread's CPU-time
/// clock measures the thread that created the timer, which nothing shows; another process's
/// CPU-time clock names a process outside this one.
pub fn unsupported_clock(clock: i32) -> Option<&'static str> {
    if clock >= 0 {
        return None;
    }
    if clock & 4 != 0 {
        Some("a thread's CPU-time clock")
    } else if !(clock >> 3) != 0 {
        Some("another process's CPU-time clock")
    } else {
        None
    }
}

/// Clocks whose time means the same on every machine: their timers keep their deadline.
fn wall_clock(clock: i32) -> bool {
    matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM | libc::CLOCK_TAI
    )
}

/// The POSIX timers `/proc` lists for `pid`.
pub fn list(pid: Pid) -> Result<Vec<Listed>> {
    let path = format!("/proc/{pid}/timers");
    let text = std::fs::read_to_string(&path).map_err(|source| EngineError::Os {
        what: format!(
            "reading {path} (the kernel lists POSIX timers there only with \
             CONFIG_CHECKPOINT_RESTORE)"
        ),
        source,
    })?;
    parse_listing(&text).map_err(|e| EngineError::Unrestorable(format!("{path}: {e}")))
}

/// Refuse what cannot be restored, from `/proc` alone (before the process is touched).
pub fn refuse_unsupported(pid: Pid) -> Result<()> {
    for t in list(pid)? {
        check_clock(pid, &t)?;
    }
    Ok(())
}

/// The refusal of a timer whose clock cannot be restored faithfully.
fn check_clock(pid: Pid, t: &Listed) -> Result<()> {
    match unsupported_clock(t.clock) {
        Some(what) => Err(Refusal::TimerClock {
            pid,
            id: t.id,
            clock: t.clock,
            what,
        }
        .into()),
        None => Ok(()),
    }
}

fn timespec_ns(b: &[u8], at: usize) -> u64 {
    u64_at(b, at)
        .saturating_mul(NS)
        .saturating_add(u64_at(b, at + 8))
}

fn timespec(ns: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&(ns / NS).to_le_bytes());
    b[8..16].copy_from_slice(&(ns % NS).to_le_bytes());
    b
}

/// Every timer of the frozen process, asked through its leader `inj`. `threads` maps each
/// thread's id in our pid namespace to the id the process knows it by.
pub fn capture(
    inj: &Injector,
    scratch: &Scratch,
    pid: Pid,
    threads: &[(Pid, i32)],
) -> Result<Timers> {
    let mut timers = Timers::default();
    // The three interval timers in one stop, each into its own 32 bytes.
    let calls: Vec<Call> = (0..3u64)
        .map(|which| {
            let at = scratch.addr + AT_TIMES + 32 * which;
            Call::new(libc::SYS_getitimer, [which, at, 0, 0, 0, 0])
        })
        .collect();
    inj.batch_call("getitimer", scratch, ITIMERS_TABLE_AT, &calls)?;
    let all = scratch.read(inj.pid(), AT_TIMES, 3 * 32)?;
    for (which, b) in (0..3u32).zip(all.chunks_exact(32)) {
        // struct itimerval { interval, value }, each { sec, usec }.
        let us = |at| u64_at(b, at) * 1_000_000 + u64_at(b, at + 8);
        let (interval_us, value_us) = (us(0), us(16));
        if value_us != 0 {
            timers.itimers.push(IntervalTimer {
                which,
                value_us,
                interval_us,
            });
        }
    }
    for t in list(pid)? {
        // Again: a timer may have been made between the preflight and the freeze.
        check_clock(pid, &t)?;
        let tid = if t.notify & SIGEV_THREAD_ID != 0 {
            threads
                .iter()
                .find(|(outer, _)| outer.as_raw() == t.target)
                .map(|(_, inner)| *inner)
                .ok_or(Refusal::TimerThreadGone {
                    pid,
                    id: t.id,
                    tid: t.target,
                })?
        } else {
            0
        };
        let what = format!("timer_gettime of timer {}", t.id);
        inj.call(
            &what,
            libc::SYS_timer_gettime,
            [t.id as u64, scratch.addr + AT_TIMES, 0, 0, 0, 0],
        )?;
        let b = scratch.read(inj.pid(), AT_TIMES, 32)?;
        // struct itimerspec { interval, value }, each { sec, nsec }.
        let (interval_ns, value_ns) = (timespec_ns(&b, 0), timespec_ns(&b, 16));
        let overrun = inj.call(
            "timer_getoverrun",
            libc::SYS_timer_getoverrun,
            [t.id as u64, 0, 0, 0, 0, 0],
        )? as i32;
        let deadline_ns = if wall_clock(t.clock) && value_ns != 0 {
            Some(clock_now(inj, scratch, t.clock)?.saturating_add(value_ns))
        } else {
            None
        };
        timers.posix.push(PosixTimer {
            id: t.id,
            clock: t.clock,
            notify: t.notify,
            signo: t.signo,
            value: t.value,
            tid,
            value_ns,
            interval_ns,
            deadline_ns,
            overrun,
            signal_queued: false,
        });
    }
    Ok(timers)
}

/// Create the POSIX timers with their ids and arm every timer, from inside the leader `inj`,
/// once every thread exists (a timer may signal any of them). `tid_of` maps a thread id of
/// the image to the id the restored process knows it by.
pub fn apply(
    inj: &Injector,
    scratch: &Scratch,
    itimers: &[IntervalTimer],
    posix: &[PosixTimer],
    tid_of: impl Fn(i32) -> Option<i32>,
) -> Result<()> {
    if !posix.is_empty() {
        // The tests set this to exercise the path of kernels before 6.14 on newer ones.
        let by_counter = std::env::var_os("MRUN_TIMER_IDS_BY_COUNTER").is_some();
        let explicit = !by_counter
            && inj.raw(
                libc::SYS_prctl,
                [
                    PR_TIMER_CREATE_RESTORE_IDS,
                    PR_TIMER_CREATE_RESTORE_IDS_ON,
                    0,
                    0,
                    0,
                    0,
                ],
            )? == 0;
        let made = create_all(inj, scratch, posix, &tid_of, explicit);
        if explicit {
            inj.call(
                "prctl(PR_TIMER_CREATE_RESTORE_IDS_OFF)",
                libc::SYS_prctl,
                [
                    PR_TIMER_CREATE_RESTORE_IDS,
                    PR_TIMER_CREATE_RESTORE_IDS_OFF,
                    0,
                    0,
                    0,
                    0,
                ],
            )?;
        }
        made?;
    }
    // Armed last, so the restore's own work is not counted against CPU-time timers.
    for t in posix.iter().filter(|t| t.value_ns != 0) {
        let (flags, value) = match (t.deadline_ns, t.signal_queued) {
            (Some(deadline), false) => (TIMER_ABSTIME, deadline),
            (None, false) => (0, t.value_ns),
            // Expired one period before its next expiry: it queues its signal at once, and
            // when that is taken the kernel rearms it for the next expiry, counting overruns.
            (deadline, true) => {
                let next = match deadline {
                    Some(deadline) => deadline,
                    None => clock_now(inj, scratch, t.clock)?.saturating_add(t.value_ns),
                };
                (
                    TIMER_ABSTIME,
                    next.saturating_sub(t.interval_ns.max(t.value_ns)),
                )
            }
        };
        let mut its = Vec::with_capacity(32);
        its.extend_from_slice(&timespec(t.interval_ns));
        its.extend_from_slice(&timespec(value));
        let at = scratch.write(inj.pid(), AT_TIMES, &its)?;
        inj.call(
            &format!("timer_settime of timer {}", t.id),
            libc::SYS_timer_settime,
            [t.id as u64, flags, at, 0, 0, 0],
        )?;
    }
    for t in itimers {
        let mut itv = [0u8; 32];
        for (at, us) in [(0, t.interval_us), (16, t.value_us)] {
            itv[at..at + 8].copy_from_slice(&(us / 1_000_000).to_le_bytes());
            itv[at + 8..at + 16].copy_from_slice(&(us % 1_000_000).to_le_bytes());
        }
        let at = scratch.write(inj.pid(), AT_TIMES, &itv)?;
        inj.call(
            "setitimer",
            libc::SYS_setitimer,
            [t.which as u64, at, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

fn clock_now(inj: &Injector, scratch: &Scratch, clock: i32) -> Result<u64> {
    inj.call(
        "clock_gettime",
        libc::SYS_clock_gettime,
        [clock as u64, scratch.addr + AT_NOW, 0, 0, 0, 0],
    )?;
    let now = scratch.read(inj.pid(), AT_NOW, 16)?;
    Ok(timespec_ns(&now, 0))
}

/// Take out of `queue` the signals of periodic timers that wait there, marking those timers
/// [`PosixTimer::signal_queued`]. Re-queued as they are, they would come with a second signal
/// from the restored timer at its next expiry, where the original queues none until the
/// first is taken. A one-shot timer's signal stays in the queue (the timer is disarmed).
pub fn claim_queued(posix: &mut [PosixTimer], queue: &mut Vec<QueuedSignal>) {
    queue.retain(|q| {
        // siginfo: si_signo, si_errno, si_code, padding, then si_timerid for SI_TIMER.
        let word = |at: usize| {
            q.info
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_le_bytes)
        };
        if word(8) != Some(libc::SI_TIMER) {
            return true;
        }
        let Some(t) = posix.iter_mut().find(|t| {
            Some(t.id) == word(16) && t.signo == q.signo && t.interval_ns != 0 && t.value_ns != 0
        }) else {
            return true;
        };
        if t.signal_queued {
            return true;
        }
        t.signal_queued = true;
        false
    });
}

/// Create every timer, in ascending id order, each with its id: asked for explicitly, or, on
/// kernels that cannot (before 6.14), by walking the per-process id counter up to it with
/// timers made and deleted again.
fn create_all(
    inj: &Injector,
    scratch: &Scratch,
    posix: &[PosixTimer],
    tid_of: &impl Fn(i32) -> Option<i32>,
    explicit: bool,
) -> Result<()> {
    for t in posix {
        let mut sev = [0u8; 64];
        sev[0..8].copy_from_slice(&t.value.to_le_bytes());
        sev[8..12].copy_from_slice(&t.signo.to_le_bytes());
        sev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        if t.notify & SIGEV_THREAD_ID != 0 {
            let tid = tid_of(t.tid).ok_or_else(|| {
                EngineError::Unrestorable(format!(
                    "POSIX timer {} signals thread {}, which the image does not hold",
                    t.id, t.tid
                ))
            })?;
            sev[16..20].copy_from_slice(&tid.to_le_bytes());
        }
        let sev_at = scratch.write(inj.pid(), AT_SIGEVENT, &sev)?;
        let mut walked = 0;
        loop {
            let id_at = scratch.write(inj.pid(), AT_ID, &t.id.to_le_bytes())?;
            let r = inj.raw(
                libc::SYS_timer_create,
                [t.clock as u64, sev_at, id_at, 0, 0, 0],
            )?;
            if r == -(libc::EBUSY as i64) {
                return Err(EngineError::Unrestorable(format!(
                    "POSIX timer id {} is taken in the fresh process",
                    t.id
                )));
            }
            if r < 0 {
                return Err(EngineError::Os {
                    what: format!("timer_create of timer {} in pid {}", t.id, inj.pid()),
                    source: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
            let b = scratch.read(inj.pid(), AT_ID, 4)?;
            let got = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if got == t.id {
                break;
            }
            if explicit {
                return Err(EngineError::Unrestorable(format!(
                    "POSIX timer id {} was asked for but the kernel gave id {got}",
                    t.id
                )));
            }
            if got > t.id || i64::from(t.id - got) > MAX_PLACEHOLDERS - walked {
                return Err(EngineError::Unrestorable(format!(
                    "POSIX timer id {} cannot be made again on this kernel, which hands out id \
                     {got} next and cannot be asked for a given id (Linux 6.14 can)",
                    t.id
                )));
            }
            walked += 1;
            inj.call(
                "timer_delete of a placeholder timer",
                libc::SYS_timer_delete,
                [got as u64, 0, 0, 0, 0, 0],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "ID: 101\nsignal: 14/0000000000000065\nnotify: signal/pid.8970\n\
        ClockID: 1\nID: 3\nsignal: 14/0000000000000000\nnotify: signal/pid.8970\nClockID: -2\n\
        ID: 2\nsignal: 10/000000001234abcd\nnotify: signal/tid.8971\nClockID: -6\n\
        ID: 1\nsignal: 10/000000001234abcd\nnotify: none/pid.8970\nClockID: 0\n";

    #[test]
    fn parses_the_kernel_listing() {
        let got = parse_listing(LISTING).expect("a valid listing");
        let ids: Vec<i32> = got.iter().map(|t| t.id).collect();
        assert_eq!(ids, [1, 2, 3, 101]);
        assert_eq!(
            got[1],
            Listed {
                id: 2,
                signo: 10,
                value: 0x1234abcd,
                notify: libc::SIGEV_SIGNAL | SIGEV_THREAD_ID,
                target: 8971,
                clock: -6,
            }
        );
        assert_eq!(got[0].notify, libc::SIGEV_NONE);
        assert_eq!(got[3].value, 101);
        assert!(parse_listing("").expect("empty").is_empty());
        assert!(parse_listing("signal: 1/0\n").is_err(), "no ID first");
        assert!(parse_listing("ID: 1\nnotify: odd/pid.1\n").is_err());
    }

    #[test]
    fn cpu_clocks() {
        assert_eq!(unsupported_clock(libc::CLOCK_MONOTONIC), None);
        assert_eq!(unsupported_clock(-6), None, "this process's CPU clock");
        assert!(unsupported_clock(-2).is_some(), "the creating thread's");
        // MAKE_PROCESS_CPUCLOCK(1234, CPUCLOCK_SCHED)
        assert!(unsupported_clock((!1234 << 3) | 2).is_some());
    }
}
