//! Does this kernel offer what the tracker needs? Asked once per process, by trying the whole
//! mechanism on a small mapping of our own: a user-mode-only userfaultfd with asynchronous
//! write-protection, `PAGEMAP_SCAN` arming and reading it, and the reports the tracker's
//! safety rests on (a write, a page dropped with `MADV_DONTNEED`, a range with no page table).

use std::fs::File;
use std::io;
use std::sync::OnceLock;

use crate::sys::memory::{self, Region, Scan};
use crate::sys::uffd::{
    OwnMapping, Uffd, FEATURE_WP_ASYNC, FEATURE_WP_UNPOPULATED, PAGE_IS_PRESENT, PAGE_IS_SWAPPED,
    PAGE_IS_WRITTEN, PM_SCAN_CHECK_WPASYNC, PM_SCAN_WP_MATCHING,
};

pub(super) const PAGE: u64 = 4096;
/// A PMD's worth of memory: the span of one page table.
const PMD: u64 = 2 << 20;

/// Why this kernel cannot track dirty pages, in one sentence naming what is missing and which
/// Linux has it. Pre-copy falls back to stop-and-copy and `MRUN_TRACE` says this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(String);

static ANSWER: OnceLock<Result<(), Unsupported>> = OnceLock::new();

/// Whether this kernel can track the pages a running process writes: userfaultfd with
/// `UFFD_FEATURE_WP_ASYNC` and `UFFD_FEATURE_WP_UNPOPULATED`, `UFFD_USER_MODE_ONLY` (so that
/// an unprivileged user can), and `PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING` and
/// `PM_SCAN_CHECK_WPASYNC` (Linux 6.7+), reporting dropped pages as written. Tried once, then
/// remembered.
pub fn probe() -> Result<(), Unsupported> {
    ANSWER.get_or_init(try_this_kernel).clone()
}

fn no(text: impl Into<String>) -> Unsupported {
    Unsupported(text.into())
}

fn try_this_kernel() -> Result<(), Unsupported> {
    let query = Uffd::new_own().map_err(|e| {
        no(match e.raw_os_error() {
            Some(libc::ENOSYS) => {
                "this kernel has no userfaultfd (CONFIG_USERFAULTFD, Linux 4.3+)".to_string()
            }
            Some(libc::EINVAL) => "this kernel's userfaultfd lacks UFFD_USER_MODE_ONLY, which \
                                   an unprivileged user needs (Linux 5.11+)"
                .to_string(),
            Some(libc::EPERM) | Some(libc::EACCES) => "userfaultfd is refused to this process \
                                                       (a seccomp filter forbids it)"
                .to_string(),
            _ => format!("userfaultfd() failed here: {e}"),
        })
    })?;
    let known = query
        .api(0)
        .map_err(|e| no(format!("this kernel's userfaultfd refuses UFFDIO_API: {e}")))?;
    if known & FEATURE_WP_ASYNC == 0 {
        return Err(no(
            "this kernel's userfaultfd has no asynchronous write-protection \
             (UFFD_FEATURE_WP_ASYNC, Linux 6.7+)",
        ));
    }
    if known & FEATURE_WP_UNPOPULATED == 0 {
        return Err(no(
            "this kernel's userfaultfd cannot write-protect pages not touched \
             yet (UFFD_FEATURE_WP_UNPOPULATED, Linux 6.4+)",
        ));
    }
    let tracker = Uffd::new_own().map_err(|e| no(format!("userfaultfd() failed here: {e}")))?;
    tracker
        .api(FEATURE_WP_ASYNC | FEATURE_WP_UNPOPULATED)
        .map_err(|e| no(format!("this kernel's userfaultfd refuses WP_ASYNC: {e}")))?;
    let pagemap = File::open("/proc/self/pagemap")
        .map_err(|e| no(format!("/proc/self/pagemap cannot be opened: {e}")))?;
    let m = OwnMapping::aligned(PMD, PMD)
        .map_err(|e| no(format!("a mapping to try write-tracking on failed: {e}")))?;
    try_mapping(&tracker, &pagemap, m)
}

/// Arm `m`, write one page and drop another, check both are reported; then grow `m` by a
/// range no page table covers yet and check that it reads as written too.
fn try_mapping(tracker: &Uffd, pagemap: &File, mut m: OwnMapping) -> Result<(), Unsupported> {
    m.no_huge_pages();
    for page in 0..4 {
        m.write(page * PAGE, 1);
    }
    tracker.register_wp(m.start(), m.end()).map_err(|e| {
        no(format!(
            "this kernel's userfaultfd refuses to write-protect private memory: {e}"
        ))
    })?;
    let armed = scan(pagemap, &arming(m.start(), m.end())).map_err(|e| {
        no(match e.raw_os_error() {
            Some(libc::ENOTTY) => "this kernel has no PAGEMAP_SCAN ioctl (Linux 6.7+)".to_string(),
            Some(libc::EINVAL) => "this kernel's PAGEMAP_SCAN lacks PM_SCAN_WP_MATCHING or \
                                   PM_SCAN_CHECK_WPASYNC (Linux 6.7+)"
                .to_string(),
            _ => format!("PAGEMAP_SCAN cannot write-protect memory here: {e}"),
        })
    })?;
    if covered(&armed, |_| true) != m.end() - m.start() {
        return Err(no(
            "this kernel's PAGEMAP_SCAN skips memory registered for write-protection",
        ));
    }
    m.write(0, 2);
    m.drop_pages(PAGE, PAGE)
        .map_err(|e| no(format!("MADV_DONTNEED failed here: {e}")))?;
    let written = scan(pagemap, &round(m.start(), m.end()))
        .map_err(|e| no(format!("PAGEMAP_SCAN failed here: {e}")))?;
    let seen = |page: u64| {
        written
            .iter()
            .any(|r| r.start <= m.start() + page * PAGE && m.start() + (page + 1) * PAGE <= r.end)
    };
    if !seen(0) {
        return Err(no(
            "this kernel's PAGEMAP_SCAN does not report pages written under asynchronous \
             write-protection",
        ));
    }
    if !seen(1) {
        return Err(no(
            "this kernel's PAGEMAP_SCAN does not report a page dropped with MADV_DONTNEED as \
             written (Linux 6.7+ does)",
        ));
    }
    // A range with no page table at all: what a huge page dropped with MADV_DONTNEED leaves.
    let old_end = m.end();
    m.grow(2 * PMD).map_err(|e| {
        no(format!(
            "could not grow a mapping to try write-tracking on (mremap: {e})"
        ))
    })?;
    let hole = scan(pagemap, &round(old_end, m.end()))
        .map_err(|e| no(format!("PAGEMAP_SCAN failed here: {e}")))?;
    if covered(&hole, |c| c & PAGE_IS_WRITTEN != 0) != m.end() - old_end {
        return Err(no(
            "this kernel's PAGEMAP_SCAN does not report memory dropped together with its page \
             table (a huge page given back with MADV_DONTNEED) as written, which would leave \
             stale data in a migrated job (fixed in Linux releases since July 2026)",
        ));
    }
    Ok(())
}

/// The scan that arms a freshly registered range: every page is reported (with whether it
/// holds something) and write-protected in the same walk.
pub(super) fn arming(start: u64, end: u64) -> Scan {
    Scan {
        start,
        end,
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        mask: 0,
        inverted: 0,
        report: PAGE_IS_WRITTEN | PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    }
}

/// The scan of a round: the pages written since the last one, write-protected again in the
/// same walk. Exactly this mask and report take the kernel's fast path, which also reports a
/// page table entry emptied since (a dropped page) as written.
pub(super) fn round(start: u64, end: u64) -> Scan {
    Scan {
        start,
        end,
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        mask: PAGE_IS_WRITTEN,
        inverted: 0,
        report: PAGE_IS_WRITTEN,
    }
}

fn scan(pagemap: &File, s: &Scan) -> io::Result<Vec<Region>> {
    let mut out = Vec::new();
    memory::scan(pagemap, s, &mut out)?;
    Ok(out)
}

/// Bytes of the regions whose categories pass `keep`.
fn covered(regions: &[Region], keep: impl Fn(u64) -> bool) -> u64 {
    regions
        .iter()
        .filter(|r| keep(r.categories))
        .map(|r| r.end - r.start)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_is_probed_once_and_answers() {
        let first = super::probe();
        assert_eq!(first, super::probe());
        if let Err(why) = first {
            assert!(why.to_string().contains("Linux") || why.to_string().contains("refused"));
        }
    }
}
