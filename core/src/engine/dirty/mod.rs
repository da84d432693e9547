//! Dirty-page tracking for pre-copy migration: which pages a running process wrote since the
//! last look, without soft-dirty (not built into Debian's kernels), by userfaultfd
//! write-protection in asynchronous mode (`UFFD_FEATURE_WP_ASYNC`) read and re-armed by the
//! `PAGEMAP_SCAN` ioctl (Linux 6.7+). Where the kernel lacks them, [`probe`] says so in one
//! sentence and pre-copy falls back to stop-and-copy. The design, the cases and the costs are
//! in `docs/dirty-tracking.md`.
//!
//! [`DirtyTracker::start`] makes the process create a userfaultfd (frozen for a few injected
//! system calls), keeps the only descriptor of it, and arms every area worth tracking:
//! registered for write-protection, then one `PAGEMAP_SCAN` walk that write-protects every
//! page and says which hold something (the first round). Each
//! [`DirtyTracker::take_written`] walks the armed areas with `PM_SCAN_WP_MATCHING`: the pages
//! written since the previous walk (and pages dropped since, which read as zero or as the
//! file again) are reported and write-protected again, atomically. Areas mapped since are
//! armed and reported whole; areas that cannot be tracked are listed, for the caller to treat
//! as always written.
//!
//! The process never waits on the tracker: the kernel resolves each write fault itself and
//! only records it. Never touches page contents, and never anything outside the process's
//! memory map.

mod areas;
mod error;
mod inject;
mod probe;
mod tracker;

pub use crate::ranges::RangeSet;
pub use areas::{Why, MAX_TRACKED};
pub use error::DirtyError;
pub use probe::{probe, Unsupported};
pub use tracker::{DirtyTracker, Round, Untracked};
