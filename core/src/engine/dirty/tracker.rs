//! The tracker: arms the areas of a running process and, each round, reports the pages
//! written since the previous one (see the module documentation for the rules).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::areas::{self, Area, Kind, Why};
use super::error::{Context, DirtyError, Result};
use super::probe::{self, probe};
use crate::ranges::RangeSet;
use crate::sys::memory::{Region, Scan};
use crate::sys::uffd::{
    Uffd, FEATURE_WP_ASYNC, FEATURE_WP_UNPOPULATED, PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
};
use crate::sys::{memory, Pid};

/// An area the tracker leaves alone: the caller treats its pages as written at every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untracked {
    pub start: u64,
    pub end: u64,
    pub why: Why,
}

/// What one round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Pages whose contents may differ from what they held at the previous round (at the
    /// first round: every page that holds anything), page-aligned, in address order. Read
    /// them after this call returns; whatever changes from then on is in the next round.
    pub written: RangeSet,
    /// Areas armed this round (at the first round: all of them): mapped anew since the
    /// previous round, so whatever was read there before is void. Their pages read as zeros
    /// (or as the file, for a file mapping) except those in `written`.
    pub fresh: RangeSet,
    /// Areas not tracked, in address order.
    pub untracked: Vec<Untracked>,
    /// Areas write-protected during this round (new since the previous one).
    pub armed: usize,
    /// Areas tracked.
    pub tracked: usize,
    /// `PAGEMAP_SCAN` and userfaultfd calls made.
    pub ioctls: u32,
    /// Time the round took.
    pub took: Duration,
}

/// Tracks the pages a running process writes. Dropping it (or [`DirtyTracker::stop`]) gives
/// the write-protection back: the process runs on as if it had never been tracked.
pub struct DirtyTracker {
    pid: Pid,
    uffd: Uffd,
    /// `/proc/PID/maps` and `/proc/PID/pagemap`, opened before the userfaultfd was made: they
    /// read that memory, and nothing once the process has exited or executed a new program.
    maps: File,
    pagemap: File,
    guards: memory::Pagemap,
    text: Vec<u8>,
    regions: Vec<Region>,
    /// What was write-protected by this tracker (areas may have moved or gone since).
    armed: RangeSet,
    /// Copied-on-write pages of private file mappings as of the last round: they may go back
    /// to the file's contents (`MADV_DONTNEED`) without a write, which no scan reports.
    cow: RangeSet,
    /// Areas the kernel would not let us track, by their maps line: not asked again.
    refused: HashMap<String, Why>,
}

impl DirtyTracker {
    /// Start tracking `pid`, which keeps running (it is stopped only for the few system calls
    /// that make its userfaultfd). Returns the tracker and the first round: every page that
    /// holds something now, which the caller copies first.
    pub fn start(pid: Pid) -> Result<(DirtyTracker, Round)> {
        probe()?;
        let open = |what: &str| {
            File::open(format!("/proc/{pid}/{what}")).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ESRCH) => DirtyError::Gone { pid },
                _ => DirtyError::Os {
                    what: format!("opening /proc/{pid}/{what}"),
                    source: e,
                },
            })
        };
        let (maps, pagemap) = (open("maps")?, open("pagemap")?);
        if let Some(fd) = own_userfaultfd(pid)? {
            return Err(DirtyError::OwnUserfaultfd { pid, fd });
        }
        let guards = memory::Pagemap::open(pid).ctx(|| format!("opening /proc/{pid}/pagemap"))?;
        let mut trace = crate::trace::Trace::new("dirty tracking");
        let uffd = super::inject::userfaultfd_of(pid)?;
        trace.mark("userfaultfd made (the job stopped)");
        uffd.api(FEATURE_WP_ASYNC | FEATURE_WP_UNPOPULATED)
            .ctx(|| format!("enabling asynchronous write-protection for pid {pid}"))?;
        let mut tracker = DirtyTracker {
            pid,
            uffd,
            maps,
            pagemap,
            guards,
            text: Vec::with_capacity(64 << 10),
            regions: Vec::new(),
            armed: RangeSet::new(),
            cow: RangeSet::new(),
            refused: HashMap::new(),
        };
        let first = tracker.take_written()?;
        trace.mark("armed (the job running)");
        Ok((tracker, first))
    }

    /// The pages written since the previous round (or since [`DirtyTracker::start`]),
    /// write-protected again in the same walk, and the areas not tracked. New areas are armed
    /// and reported whole (the pages that hold something).
    pub fn take_written(&mut self) -> Result<Round> {
        let began = Instant::now();
        self.read_maps()?;
        let text = std::mem::take(&mut self.text);
        let round = self.round(&String::from_utf8_lossy(&text));
        self.text = text;
        let mut round = round?;
        round.took = began.elapsed();
        Ok(round)
    }

    /// Give the write-protection back now (dropping the tracker does the same). Costs about
    /// as much as arming did (tens of milliseconds per GiB in use), during which the process
    /// cannot fault pages in: do it after a frozen process is killed, not before.
    pub fn stop(self) {}

    fn round(&mut self, maps: &str) -> Result<Round> {
        let mut round = Round::default();
        let mut file_areas = RangeSet::new();
        let mut file_written = RangeSet::new();
        let mut new_cow = RangeSet::new();
        let mut armed = RangeSet::new();
        // What the kernel refused and is still mapped as it was; the rest is forgotten.
        let mut refused = std::mem::take(&mut self.refused);
        for a in areas::parse(maps) {
            if let Some((line, why)) = refused.remove_entry(a.line) {
                self.refused.insert(line, why);
                round.untracked.push(untracked(&a, why));
                continue;
            }
            let kind = match areas::classify(&a) {
                Ok(kind) => kind,
                Err(why) => {
                    round.untracked.push(untracked(&a, why));
                    continue;
                }
            };
            let ours = !self.armed.within(a.start, a.end).is_empty();
            let scanned = if ours {
                self.scan(&probe::round(a.start, a.end), &mut round)
            } else {
                Err(libc::EPERM)
            };
            match scanned {
                Ok(()) => {
                    for r in &self.regions {
                        round.written.insert(r.start..r.end);
                        if kind == Kind::File {
                            file_written.insert(r.start..r.end);
                        }
                    }
                }
                // Not armed: new, or made anew where an armed area was.
                Err(libc::EPERM) => match self.arm(&a, kind, &mut round)? {
                    Ok(held) => {
                        round.armed += 1;
                        round.fresh.insert(a.start..a.end);
                        if kind == Kind::File {
                            new_cow = new_cow.union(&held);
                        }
                        round.written = round.written.union(&held);
                    }
                    Err(why) => {
                        round.untracked.push(untracked(&a, why));
                        continue;
                    }
                },
                Err(libc::ESRCH) => return Err(DirtyError::Gone { pid: self.pid }),
                Err(e) => {
                    return Err(DirtyError::Os {
                        what: format!("PAGEMAP_SCAN of pid {} at {:#x}", self.pid, a.start),
                        source: std::io::Error::from_raw_os_error(e),
                    })
                }
            }
            round.tracked += 1;
            armed.insert(a.start..a.end);
            if kind == Kind::File {
                file_areas.insert(a.start..a.end);
            }
        }
        self.armed = armed;
        self.track_reverts(&file_areas, &file_written, new_cow, &mut round)?;
        Ok(round)
    }

    /// Pages of private file mappings that were copies at the last round and are not now have
    /// gone back to the file's contents (or to swap, which a scan cannot tell apart): report
    /// them. Remember the copies of this round.
    fn track_reverts(
        &mut self,
        file_areas: &RangeSet,
        file_written: &RangeSet,
        new_cow: RangeSet,
        round: &mut Round,
    ) -> Result<()> {
        let before = self.cow.and(file_areas);
        let mut copies = RangeSet::new();
        let mut unsure = RangeSet::new();
        for r in before.union(file_written).ranges() {
            let scan = Scan {
                start: r.start,
                end: r.end,
                flags: 0,
                mask: 0,
                inverted: 0,
                report: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
            };
            match self.scan(&scan, round) {
                Ok(()) => {}
                Err(libc::ESRCH) => return Err(DirtyError::Gone { pid: self.pid }),
                Err(e) => {
                    return Err(DirtyError::Os {
                        what: format!("PAGEMAP_SCAN of pid {} at {:#x}", self.pid, r.start),
                        source: std::io::Error::from_raw_os_error(e),
                    })
                }
            }
            for g in &self.regions {
                let c = g.categories;
                if c & PAGE_IS_PRESENT != 0 && c & PAGE_IS_FILE == 0 {
                    copies.insert(g.start..g.end);
                } else if c & PAGE_IS_PRESENT == 0 {
                    unsure.insert(g.start..g.end);
                }
            }
        }
        let reverted = before.minus(&copies);
        round.written = round.written.union(&reverted);
        self.cow = copies
            .union(file_written)
            .union(&before.and(&unsure))
            .union(&new_cow);
        Ok(())
    }

    /// Register `a` and write-protect it, all of its pages in one walk. `Ok(Ok(held))`: the
    /// pages that hold something (of a file mapping: its copies); `Ok(Err(why))`: not tracked.
    fn arm(&mut self, a: &Area, kind: Kind, round: &mut Round) -> Result<Result<RangeSet, Why>> {
        let pid = self.pid;
        if kind == Kind::File && areas::maybe_hugetlbfs(pid, a.path) {
            self.refused.insert(a.line.to_string(), Why::Hugetlb);
            return Ok(Err(Why::Hugetlb));
        }
        // Write-protection must not touch guard regions: an area the kernel cannot answer
        // for is not tracked (the frozen image carries it).
        let guarded = match self.guards.guard_regions(a.start, a.end) {
            Ok(Some(guards)) if !guards.is_empty() => Some(Why::GuardRegions),
            Ok(_) => None,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(DirtyError::Gone { pid })
            }
            Err(e) => Some(Why::Refused(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        if let Some(why) = guarded {
            self.refused.insert(a.line.to_string(), why);
            return Ok(Err(why));
        }
        round.ioctls += 1;
        if let Err(e) = self.uffd.register_wp(a.start, a.end) {
            let why = match e.raw_os_error() {
                Some(libc::ESRCH) => return Err(DirtyError::Gone { pid }),
                // The range no longer matches the maps line we read.
                Some(libc::ENOMEM) | Some(libc::ENOENT) => return Ok(Err(Why::Changing)),
                Some(libc::EBUSY) => Why::OtherUserfaultfd,
                Some(errno) => Why::Refused(errno),
                None => Why::Refused(libc::EIO),
            };
            self.refused.insert(a.line.to_string(), why);
            return Ok(Err(why));
        }
        let mut arming = probe::arming(a.start, a.end);
        if kind == Kind::File {
            arming.report |= PAGE_IS_FILE;
        }
        let why = match self.scan(&arming, round) {
            Ok(()) if self.covers(a) => None,
            Ok(()) => Some(Why::Skipped),
            Err(libc::ESRCH) => return Err(DirtyError::Gone { pid }),
            Err(e) => Some(Why::Refused(e)),
        };
        if let Some(why) = why {
            // Not tracked after all: give it back as it was.
            let _ = self.uffd.unregister(a.start, a.end);
            self.refused.insert(a.line.to_string(), why);
            return Ok(Err(why));
        }
        let held = self
            .regions
            .iter()
            .filter(|r| r.categories & (PAGE_IS_PRESENT | PAGE_IS_SWAPPED) != 0)
            .filter(|r| r.categories & PAGE_IS_FILE == 0)
            .map(|r| r.start..r.end)
            .collect();
        Ok(Ok(held))
    }

    /// Whether the regions of the last scan cover `a` whole, without a gap.
    fn covers(&self, a: &Area) -> bool {
        let mut at = a.start;
        for r in &self.regions {
            if r.start != at {
                return false;
            }
            at = r.end;
        }
        at == a.end
    }

    /// Run `s` into `self.regions`; the errno on failure.
    fn scan(&mut self, s: &Scan, round: &mut Round) -> std::result::Result<(), i32> {
        self.regions.clear();
        match memory::scan(&self.pagemap, s, &mut self.regions) {
            Ok(calls) => {
                round.ioctls += calls;
                Ok(())
            }
            Err(e) => {
                round.ioctls += 1;
                Err(e.raw_os_error().unwrap_or(libc::EIO))
            }
        }
    }

    /// `/proc/PID/maps` into `self.text`, read anew through the descriptor opened at start.
    fn read_maps(&mut self) -> Result<()> {
        let pid = self.pid;
        self.text.clear();
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = match self.maps.read_at(&mut chunk, self.text.len() as u64) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(DirtyError::Gone { pid })
                }
                Err(e) => return Err(e).ctx(|| format!("reading /proc/{pid}/maps")),
            };
            if n == 0 {
                break;
            }
            self.text.extend_from_slice(&chunk[..n]);
        }
        if self.text.is_empty() {
            return Err(DirtyError::Gone { pid });
        }
        Ok(())
    }
}

/// A userfaultfd the process holds, if any (as `/proc/PID/fd` shows them).
fn own_userfaultfd(pid: Pid) -> Result<Option<i32>> {
    let dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {dir}"))? {
        let entry = entry.ctx(|| format!("listing {dir}"))?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile
        };
        if target.as_os_str() == "anon_inode:[userfaultfd]" {
            let fd = entry.file_name().to_str().and_then(|n| n.parse().ok());
            return Ok(Some(fd.unwrap_or(-1)));
        }
    }
    Ok(None)
}

fn untracked(a: &Area, why: Why) -> Untracked {
    Untracked {
        start: a.start,
        end: a.end,
        why,
    }
}
