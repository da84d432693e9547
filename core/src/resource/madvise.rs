//! Per-range advice: the `madvise` flags a mapping carries (as `VmFlags` in
//! `/proc/PID/smaps` shows them) and its guard regions (`MADV_GUARD_INSTALL`, Linux 6.13+).
//! Captured per [`Vma`]; given again at restore by injected madvise on the restored areas,
//! once their pages are in. Never reads or writes page contents.

use std::collections::HashMap;

use crate::engine::error::{Context, EngineError, Result};
use crate::engine::inject::Injector;
use crate::image::model::{Advice, Backing, Vma};
use crate::sys::{memory, Pid};

/// `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+).
const MADV_GUARD_INSTALL: u64 = 102;

/// `VmFlags` code, [`Advice`] bit, madvise advice, its name.
const CODES: [(&str, u32, i32, &str); 8] = [
    ("dc", Advice::DONTFORK, libc::MADV_DONTFORK, "MADV_DONTFORK"),
    (
        "wf",
        Advice::WIPEONFORK,
        libc::MADV_WIPEONFORK,
        "MADV_WIPEONFORK",
    ),
    ("hg", Advice::HUGEPAGE, libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"),
    (
        "nh",
        Advice::NOHUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        "MADV_NOHUGEPAGE",
    ),
    ("dd", Advice::DONTDUMP, libc::MADV_DONTDUMP, "MADV_DONTDUMP"),
    (
        "mg",
        Advice::MERGEABLE,
        libc::MADV_MERGEABLE,
        "MADV_MERGEABLE",
    ),
    (
        "sr",
        Advice::SEQUENTIAL,
        libc::MADV_SEQUENTIAL,
        "MADV_SEQUENTIAL",
    ),
    ("rr", Advice::RANDOM, libc::MADV_RANDOM, "MADV_RANDOM"),
];

/// The advice bits of every mapping of `pid`, keyed by its start address.
pub fn capture_advice(pid: Pid) -> Result<HashMap<u64, u32>> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    Ok(parse_smaps(&text))
}

fn parse_smaps(text: &str) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    let mut start = None;
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(s) = start.take() {
                out.insert(s, advice_of(flags));
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            // A mapping's header line: "start-end perms ..."; field lines have a ':' key.
            if let Some((s, _)) = range.split_once('-').filter(|_| !range.ends_with(':')) {
                if let Ok(s) = u64::from_str_radix(s, 16) {
                    start = Some(s);
                }
            }
        }
    }
    out
}

fn advice_of(flags: &str) -> u32 {
    flags
        .split_whitespace()
        .filter_map(|f| CODES.iter().find(|c| c.0 == f).map(|c| c.1))
        .fold(0, |a, b| a | b)
}

/// The guard regions of `pid` within `[start, end)`, or `None` when this kernel cannot tell
/// (before Linux 6.14; 6.13 has guard regions but does not show them, and a checkpoint of a
/// process with some fails there reading them).
pub fn capture_guards(pid: Pid, start: u64, end: u64) -> Result<Vec<(u64, u64)>> {
    let pagemap = memory::Pagemap::open(pid).ctx(|| format!("opening /proc/{pid}/pagemap"))?;
    Ok(pagemap
        .guard_regions(start, end)
        .ctx(|| format!("scanning /proc/{pid}/pagemap for guard regions"))?
        .unwrap_or_default())
}

/// The parts of `guards` (sorted) inside `[start, end)`.
pub fn guards_within(guards: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    guards
        .iter()
        .filter(|g| g.0 < end && g.1 > start)
        .map(|g| (g.0.max(start), g.1.min(end)))
        .collect()
}

/// Give every restored area its advice again and install its guard regions. A kernel that
/// lacks guard regions (before 6.13) fails the restore in one sentence: dropping them would
/// turn faults the program relies on into silent writes.
pub fn apply(inj: &Injector, vmas: &[Vma]) -> Result<()> {
    let pid = inj.pid();
    for vma in vmas {
        if matches!(vma.backing, Backing::Special { .. }) {
            continue;
        }
        let len = vma.end - vma.start;
        for (_, _, advice, name) in CODES.iter().filter(|c| vma.advice & c.1 != 0) {
            inj.call(
                &format!(
                    "madvise({name}) of {:#x}-{:#x} (restoring the advice the area had)",
                    vma.start, vma.end
                ),
                libc::SYS_madvise,
                [vma.start, len, *advice as u64, 0, 0, 0],
            )?;
        }
        for &(s, e) in &vma.guards {
            let r = inj.raw(libc::SYS_madvise, [s, e - s, MADV_GUARD_INSTALL, 0, 0, 0])?;
            if r == -(libc::EINVAL as i64) {
                return Err(EngineError::Incompatible(format!(
                    "the process has guard pages (madvise MADV_GUARD_INSTALL) at {s:#x}-{e:#x}, \
                     which this kernel ({}) cannot install (Linux 6.13 or later is needed)",
                    this_kernel()
                )));
            }
            if (-4095..0).contains(&r) {
                return Err(EngineError::Os {
                    what: format!("madvise(MADV_GUARD_INSTALL) of {s:#x}-{e:#x} in pid {pid}"),
                    source: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
        }
    }
    Ok(())
}

fn this_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!("Linux {}", s.trim()))
        .unwrap_or_else(|_| "this one".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_from_smaps() {
        let text = "\
7f0000000000-7f0000004000 rw-p 00000000 00:00 0 
Size:                 16 kB
VmFlags: rd wr mr mw me ac dc wf sd 
7f0000004000-7f0000005000 ---p 00000000 00:00 0 
Size:                  4 kB
VmFlags: mr mw me ac nh dd 
7f0000005000-7f0000006000 r--p 00000000 08:01 1234                       /usr/lib/x 
VmFlags: rd mr mw me hg mg sr rr 
";
        let got = parse_smaps(text);
        assert_eq!(
            got.get(&0x7f00_0000_0000),
            Some(&(Advice::DONTFORK | Advice::WIPEONFORK))
        );
        assert_eq!(
            got.get(&0x7f00_0000_4000),
            Some(&(Advice::NOHUGEPAGE | Advice::DONTDUMP))
        );
        assert_eq!(
            got.get(&0x7f00_0000_5000),
            Some(&(Advice::HUGEPAGE | Advice::MERGEABLE | Advice::SEQUENTIAL | Advice::RANDOM))
        );
    }

    #[test]
    fn guards_clipped_to_an_area() {
        let g = [(0x1000, 0x3000), (0x5000, 0x6000)];
        assert_eq!(
            guards_within(&g, 0x2000, 0x5800),
            vec![(0x2000, 0x3000), (0x5000, 0x5800)]
        );
        assert_eq!(guards_within(&g, 0x3000, 0x5000), vec![]);
    }
}
