//! The order in which `mrun --each` shows the outputs of ended jobs: as they end, or with
//! `--keep-order` in the order of the arguments, as GNU parallel's `--keep-order`: an output is
//! held until those of all earlier arguments have been shown. Counting and logging a job are
//! not held: only what is shown waits.

use std::collections::BTreeMap;

use super::outcome::Outcome;
use super::progress::Progress;

/// Which ended jobs' outputs are shown when: at once, or (`--keep-order`) held until those
/// of all earlier arguments have been shown.
pub struct Shown {
    keep_order: bool,
    /// The argument (`seq`) whose output comes next in order.
    next: usize,
    /// Ended jobs whose outputs wait for an earlier one, by `seq`.
    held: BTreeMap<usize, Outcome>,
}

impl Shown {
    pub fn new(keep_order: bool) -> Shown {
        Shown {
            keep_order,
            next: 1,
            held: BTreeMap::new(),
        }
    }

    /// `job` ended: shows its output if its turn has come, and any held ones whose turn follows.
    pub fn ended(&mut self, job: Outcome, progress: &mut Progress) {
        if !self.keep_order {
            progress.show(&job);
            return;
        }
        self.held.insert(job.spec.seq, job);
        while let Some(job) = self.held.remove(&self.next) {
            progress.show(&job);
            self.next += 1;
        }
    }

    /// The batch is over: whatever is held (behind a job that never ended) is shown, in order.
    pub fn flush(&mut self, progress: &mut Progress) {
        for job in std::mem::take(&mut self.held).into_values() {
            progress.show(&job);
        }
    }
}
