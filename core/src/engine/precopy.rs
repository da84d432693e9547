//! Pre-copy: send a job's memory while it still runs, in rounds, each sending what was
//! written since the previous one, so that the frozen checkpoint has only what changed last
//! to carry (as Pages records with bytes) and names the rest as sent (`Precopied` records).
//! Written pages are found by the dirty-page tracker ([`super::dirty`], userfaultfd
//! write-protection and `PAGEMAP_SCAN`, Linux 6.7+); where the kernel lacks them, or the job
//! is small, the move is a plain stop-and-copy. The rounds stop when what a round must send
//! is small, when it no longer shrinks (the job writes faster than the link takes it), or
//! after [`MAX_ROUNDS`]; `MRUN_TRACE=1` says which. Each round ends when the other side has
//! it (the caller's `synced`): a round measured as soon as its bytes are queued would see only
//! what the job wrote while they were queued, not while they crossed the link, and the rounds
//! would "converge" with the link still busy and the job still writing. Only the job's first process (the one the
//! user started) is pre-copied; the others go in the image as before.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use super::dirty::{self, DirtyTracker, RangeSet};
use crate::image::{page_address, Chooser, Compression, ImageError, ImageWriter, PageSource};
use crate::sys::{memory, Pid};
use crate::trace::Trace;

/// At most this many rounds before the freeze.
pub const MAX_ROUNDS: u32 = 6;
/// A job with less memory than this goes stop-and-copy: the rounds would cost more than
/// they save.
const WORTH_IT: u64 = 8 << 20;
/// Rounds stop when the next would send no more than this: the rest goes frozen.
const SMALL_ENOUGH: u64 = 2 << 20;
/// ... or when a round would send more than this share of the previous one: the job
/// writes about as fast as the rounds send, so more rounds would not shrink the rest.
const SHRINKS_BELOW: f64 = 0.75;

/// A pre-copied job: what was sent, and the tracker that knows what was written since.
pub struct Precopied {
    tracker: DirtyTracker,
    /// Pages sent and read without fault, by address in the first process.
    sent: RangeSet,
    /// Pages written since they were last sent (found at the last round and not sent then),
    /// and pages a round could not read.
    pending: RangeSet,
    pub rounds: u32,
    pub bytes_sent: u64,
    /// What the rounds measured of the link and the compressors: the frozen image starts
    /// from it.
    pub(crate) measured: Option<Chooser>,
}

impl Precopied {
    /// What the frozen image carries of the first process, from the tracker's last round (call
    /// it frozen), or `None` when that round failed (then the image carries everything).
    pub(crate) fn at_freeze(&mut self, trace: &mut Trace) -> Option<Sent> {
        match self.tracker.take_written() {
            Ok(last) => {
                let mut dirty = self.pending.union(&last.written);
                let mut untracked = RangeSet::new();
                for u in &last.untracked {
                    dirty.insert(u.start..u.end);
                    untracked.insert(u.start..u.end);
                }
                let sent = self.sent.minus(&last.fresh);
                let valid = sent.minus(&dirty);
                // In the freeze window: the line's set work only when tracing.
                trace.say_with(|| {
                    format!(
                        "pre-copy: {} MiB sent ahead still valid, {} MiB written since",
                        valid.bytes() >> 20,
                        dirty.and(&self.sent).bytes() >> 20
                    )
                });
                Some(Sent {
                    valid,
                    dirty,
                    untracked,
                    measured: self.measured.clone(),
                })
            }
            Err(e) => {
                trace.say(&format!(
                    "pre-copy: the last round failed ({e}); stop-and-copy"
                ));
                None
            }
        }
    }
}

/// The first process's pages at the freeze, as pre-copy left them: `valid` were sent and
/// not written since (the image names them); `dirty` may hold anything new (the image
/// carries them); any other page holds nothing (a tracked area's untouched page, which the
/// pagemap shows as swapped while a tracker lives) and is left out.
pub struct Sent {
    pub valid: RangeSet,
    pub dirty: RangeSet,
    /// Areas the tracker did not watch (all of them in `dirty`): only the pagemap tells
    /// which of their pages hold something.
    pub untracked: RangeSet,
    /// What the rounds measured, for the frozen image's writer (same sink).
    pub measured: Option<Chooser>,
}

/// Why pre-copy did not run, in one sentence (for the trace).
pub fn unsupported() -> Option<String> {
    dirty::probe().err().map(|u| u.to_string())
}

/// Runs the pre-copy rounds of the running `pid` into `out` (each a pre-copy stream), or
/// returns `Ok(None)` when pre-copy does not apply (the trace says why). After each round,
/// `synced` returns once the other side has everything written to `out` so far (a flush, for
/// a file). Only a failure to write `out` or to sync is an error.
pub fn run<W: Write>(
    pid: Pid,
    out: &mut W,
    compression: Compression,
    synced: &mut dyn FnMut(&mut W) -> std::io::Result<()>,
) -> Result<Option<Precopied>, ImageError> {
    let mut trace = Trace::new("pre-copy");
    if let Some(why) = unsupported() {
        trace.say(&format!("pre-copy: off ({why}); stop-and-copy"));
        return Ok(None);
    }
    // Starting the tracker stops the job for a moment: not for a job that is small anyway.
    if let Some(resident) = resident_bytes(pid).filter(|&r| r < WORTH_IT) {
        trace.say(&format!(
            "pre-copy: off (the job has {} KiB resident, less than {} MiB); stop-and-copy",
            resident >> 10,
            WORTH_IT >> 20
        ));
        return Ok(None);
    }
    let (tracker, first) = match DirtyTracker::start(pid) {
        Ok(t) => t,
        Err(e) => {
            trace.say(&format!("pre-copy: off ({e}); stop-and-copy"));
            return Ok(None);
        }
    };
    if first.written.bytes() < WORTH_IT {
        trace.say(&format!(
            "pre-copy: off (the job holds {} KiB, less than {} MiB); stop-and-copy",
            first.written.bytes() >> 10,
            WORTH_IT >> 20
        ));
        return Ok(None);
    }
    trace.mark("start");
    let mut p = Precopied {
        tracker,
        sent: RangeSet::new(),
        pending: RangeSet::new(),
        rounds: 0,
        bytes_sent: 0,
        measured: None,
    };
    let mut round = first.written;
    loop {
        let failed = send_round(pid, &round, out, (compression, &mut p.measured))?;
        synced(out)?;
        p.sent = p.sent.union(&round).minus(&failed);
        p.pending = p.pending.minus(&round).union(&failed);
        p.rounds += 1;
        p.bytes_sent += round.bytes();
        trace.mark(&format!("round {} ({} MiB)", p.rounds, round.bytes() >> 20));
        let next = match p.tracker.take_written() {
            Ok(next) => next,
            Err(e) => {
                trace.say(&format!("pre-copy: stopped ({e}); stop-and-copy"));
                return Ok(None);
            }
        };
        // A fresh area (mapped anew where one was) voids what was sent there.
        p.sent = p.sent.minus(&next.fresh);
        // Untracked areas are not sent ahead: the frozen image carries them.
        let now = next.written.union(&p.pending);
        let stop = if now.bytes() <= SMALL_ENOUGH {
            Some(format!("converged: {} KiB left", now.bytes() >> 10))
        } else if now.bytes() as f64 > round.bytes() as f64 * SHRINKS_BELOW {
            Some(format!(
                "does not converge: {} MiB written during a round of {} MiB; stop-and-copy of the rest",
                now.bytes() >> 20,
                round.bytes() >> 20
            ))
        } else if p.rounds >= MAX_ROUNDS {
            Some(format!(
                "{MAX_ROUNDS} rounds, {} MiB left; stop-and-copy of the rest",
                now.bytes() >> 20
            ))
        } else {
            None
        };
        if let Some(why) = stop {
            trace.say(&format!(
                "pre-copy: {} rounds, {} MiB sent; {why}",
                p.rounds,
                p.bytes_sent >> 20
            ));
            p.pending = now;
            return Ok(Some(p));
        }
        round = now;
    }
}

/// The resident memory of `pid` (`/proc/PID/statm`, shared file pages included: an upper
/// bound of what pre-copy could send), or `None` if it cannot be read.
fn resident_bytes(pid: Pid) -> Option<u64> {
    let statm = procfs::process::Process::new(pid.as_raw())
        .and_then(|p| p.statm())
        .ok()?;
    Some(statm.resident * procfs::page_size())
}

/// Sends the pages of `ranges` as one pre-copy stream; returns the ranges that could not
/// be read (gone since the round looked), which must not count as sent.
fn send_round<W: Write>(
    pid: Pid,
    ranges: &RangeSet,
    out: &mut W,
    (compression, measured): (Compression, &mut Option<Chooser>),
) -> Result<RangeSet, ImageError> {
    let memory = Arc::new(RunningMemory {
        pid,
        failed: Mutex::new(RangeSet::new()),
    });
    let source: Arc<dyn PageSource> = memory.clone();
    let mut w = ImageWriter::precopy(&mut *out, compression)?;
    if let Some(m) = measured.take() {
        w.carry_on(m);
    }
    for r in ranges.ranges() {
        w.read_pages(
            &source,
            page_address(0, r.start),
            r.start,
            (r.end - r.start) as usize,
        )?;
    }
    *measured = Some(w.measured());
    w.finish()?;
    // A poisoned lock still holds every failure noted before the panic: none may be lost,
    // or a page sent as zeros would count as sent.
    let failed = memory
        .failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Ok(failed)
}

/// The memory of a process that runs on while it is read. A page that cannot be read (its
/// area was unmapped since the round looked) is sent as zeros and noted: it is not sent.
struct RunningMemory {
    pid: Pid,
    failed: Mutex<RangeSet>,
}

impl PageSource for RunningMemory {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        if memory::read(self.pid, addr, buf).is_err() {
            buf.fill(0);
            self.failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(addr..addr + buf.len() as u64);
        }
        Ok(())
    }
}
