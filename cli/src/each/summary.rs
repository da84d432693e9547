//! The last line of `mrun --each` and its exit status.

use super::outcome::signal_name;

/// How many failed jobs the summary names; the job log has them all.
pub const NAMED_FAILURES: usize = 5;
/// GNU parallel's cap on the exit status counting failed jobs.
pub const MAX_FAILED_STATUS: i32 = 101;

/// What the batch came to.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: usize,
    pub succeeded: usize,
    /// The failed jobs' command lines with how they ended (`gzip c.txt (exit 1)`), in the order
    /// they ended.
    pub failed: Vec<String>,
    /// The signal that stopped the batch before every job started.
    pub stopped_by: Option<i32>,
}

impl Tally {
    fn not_started(&self) -> usize {
        self.total - self.succeeded - self.failed.len()
    }

    /// `mrun: 8 jobs: 7 succeeded, 1 failed: gzip c.txt (exit 1)`.
    pub fn line(&self) -> String {
        let noun = if self.total == 1 { "job" } else { "jobs" };
        let mut text = format!("mrun: {} {noun}: {} succeeded", self.total, self.succeeded);
        if let Some(signo) = self.stopped_by {
            text.push_str(&format!(
                ", {} not started (stopped by {})",
                self.not_started(),
                signal_name(signo)
            ));
        }
        if !self.failed.is_empty() {
            text.push_str(&format!(", {} failed: ", self.failed.len()));
            text.push_str(
                &self
                    .failed
                    .iter()
                    .take(NAMED_FAILURES)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            if self.failed.len() > NAMED_FAILURES {
                text.push_str(&format!(" and {} more", self.failed.len() - NAMED_FAILURES));
            }
        }
        text
    }

    /// 128+N when signal N stopped the batch, else the number of failed jobs, at most 101.
    pub fn exit_status(&self) -> i32 {
        match self.stopped_by {
            Some(signo) => 128 + signo,
            None => self.failed.len().min(MAX_FAILED_STATUS as usize) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_succeeded_exits_zero() {
        let t = Tally {
            total: 3,
            succeeded: 3,
            ..Tally::default()
        };
        assert_eq!(t.line(), "mrun: 3 jobs: 3 succeeded");
        assert_eq!(t.exit_status(), 0);
    }

    #[test]
    fn failures_are_named_and_counted_in_the_exit_status() {
        let t = Tally {
            total: 8,
            succeeded: 7,
            failed: vec!["gzip c.txt (exit 1)".into()],
            stopped_by: None,
        };
        assert_eq!(
            t.line(),
            "mrun: 8 jobs: 7 succeeded, 1 failed: gzip c.txt (exit 1)"
        );
        assert_eq!(t.exit_status(), 1);
    }

    #[test]
    fn the_list_of_failures_is_capped_and_so_is_the_status() {
        let failed: Vec<String> = (0..150).map(|i| format!("false {i} (exit 1)")).collect();
        let t = Tally {
            total: 150,
            succeeded: 0,
            failed,
            stopped_by: None,
        };
        assert!(
            t.line().ends_with("false 4 (exit 1) and 145 more"),
            "{}",
            t.line()
        );
        assert_eq!(t.exit_status(), 101);
    }

    #[test]
    fn a_signal_sets_the_status_and_counts_what_never_started() {
        let t = Tally {
            total: 5,
            succeeded: 1,
            failed: vec!["sleep 9 (killed by SIGINT)".into()],
            stopped_by: Some(2),
        };
        assert_eq!(t.line(), "mrun: 5 jobs: 1 succeeded, 3 not started (stopped by SIGINT), 1 failed: sleep 9 (killed by SIGINT)");
        assert_eq!(t.exit_status(), 130);
    }
}
