//! The ETA of `mrun --each`: how long until the last job ends, estimated as GNU parallel does
//! from what the batch knows: the run times of the jobs that ended, how long each running job
//! has run, how many jobs wait and how many run at once. It keeps no clock: the caller gives
//! the times, so the estimate is a pure function of them.
//!
//! A waiting job is expected to take the average run time. A running job is expected to take
//! what the jobs that ran longer than it has took, on average (the mean residual time of the
//! ended jobs past its age), so a job past the average is not taken for one about to end. The
//! waiting jobs start in turn on whichever slot frees first. Every term is bounded by the
//! longest run time seen, so the estimate never grows without bound; until a job has ended, or
//! when every running job has outlived every ended one and none waits, there is none.

use std::time::Duration;

/// Run times of the jobs that ended, with the estimate made from them.
#[derive(Debug, Default)]
pub struct Estimator {
    /// Nanoseconds; ascending up to `sorted`, the rest as they came.
    ended: Vec<u64>,
    sorted: usize,
}

impl Estimator {
    /// A job ended after `runtime`.
    pub fn ended(&mut self, runtime: Duration) {
        self.ended.push(nanos(runtime));
    }

    /// How long until the last job ends: `running` holds how long each running job has run,
    /// `waiting` jobs are yet to start, at most `slots` run at once. `None` when it cannot be
    /// estimated (no job ended yet, or every running job ran longer than any that ended and
    /// none waits); zero only when no job remains. It costs a pass over the ended jobs.
    pub fn remaining(
        &mut self,
        running: &[Duration],
        waiting: usize,
        slots: usize,
    ) -> Option<Duration> {
        if self.sorted < self.ended.len() {
            // A sorted run and a short tail: the stable sort merges them in linear time.
            self.ended.sort();
            self.sorted = self.ended.len();
        }
        if running.is_empty() && waiting == 0 {
            return Some(Duration::ZERO);
        }
        let count = self.ended.len() as u64;
        if count == 0 {
            return None;
        }
        // suffix[i]: the sum of ended[i..].
        let mut suffix = vec![0u128; self.ended.len() + 1];
        for (i, &d) in self.ended.iter().enumerate().rev() {
            suffix[i] = suffix[i + 1] + u128::from(d);
        }
        let average = (suffix[0] / u128::from(count)) as u64;
        // When each slot frees up: a running job's expected rest, or now for an idle slot.
        let mut free: Vec<u64> = running
            .iter()
            .map(|&age| {
                let age = nanos(age);
                let longer = self.ended.partition_point(|&d| d <= age);
                let n = self.ended.len() - longer;
                if n == 0 {
                    // Longer than every job that ended: nothing says how much longer.
                    0
                } else {
                    ((suffix[longer] - u128::from(age) * n as u128) / n as u128) as u64
                }
            })
            .collect();
        free.resize(free.len().max(slots.max(1)), 0);
        let last =
            last_end(&free, waiting as u64, average).max(free.iter().copied().max().unwrap_or(0));
        (last > 0).then(|| Duration::from_nanos(last))
    }
}

/// When the last of `waiting` jobs of length `each` ends, each started on whichever slot frees
/// first (`free`: when each slot frees, in ns from now). The k-th of them to end ends at the
/// k-th smallest of the times `free[i] + j * each` (j >= 1), so the last ends at the least `t`
/// by which `waiting` of those times have come: found by bisection, whatever `waiting` is.
fn last_end(free: &[u64], waiting: u64, each: u64) -> u64 {
    let earliest = free.iter().copied().min().unwrap_or(0);
    if waiting == 0 || each == 0 {
        return earliest;
    }
    let ended_by = |t: u64| -> u64 {
        free.iter()
            .map(|&f| t.saturating_sub(f) / each)
            .fold(0u64, u64::saturating_add)
    };
    let (mut low, mut high) = (
        earliest,
        earliest.saturating_add(waiting.saturating_mul(each)),
    );
    while low < high {
        let mid = low + (high - low) / 2;
        if ended_by(mid) >= waiting {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `ETA 1m 05s`, `ETA ?` when there is no estimate; whole seconds rounded up, so a job still
/// running never shows `0s`.
pub fn shown(eta: Option<Duration>) -> String {
    let Some(eta) = eta else {
        return "ETA ?".to_string();
    };
    let secs = eta.as_secs() + u64::from(eta.subsec_nanos() > 0);
    match secs {
        0..60 => format!("ETA {secs}s"),
        60..3600 => format!("ETA {}m {:02}s", secs / 60, secs % 60),
        _ => format!("ETA {}h {:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    fn estimator(ended: &[f64]) -> Estimator {
        let mut e = Estimator::default();
        for &d in ended {
            e.ended(s(d));
        }
        e
    }

    #[test]
    fn no_estimate_before_a_job_ended() {
        let mut e = Estimator::default();
        assert_eq!(e.remaining(&[s(5.0), s(1.0)], 8, 2), None);
        assert_eq!(e.remaining(&[], 0, 2), Some(Duration::ZERO));
    }

    #[test]
    fn equal_jobs_are_estimated_exactly() {
        // 10 jobs of 10 s on 4 slots: at 10 s, 4 ended, 4 just started, 2 wait: 20 s remain.
        let mut e = estimator(&[10.0; 4]);
        assert_eq!(e.remaining(&[s(0.0); 4], 2, 4), Some(s(20.0)));
        // At 15 s: 5 s for the running ones, then the 2 waiting take 10 s on 2 free slots.
        assert_eq!(e.remaining(&[s(5.0); 4], 2, 4), Some(s(15.0)));
    }

    #[test]
    fn a_job_past_the_average_is_expected_to_take_what_longer_ones_took() {
        // Ended after 2, 4, 6, 8 s (average 5); one job has run 5 s: the jobs that ran longer
        // went on for 1 and 3 s more, so 2 s.
        let mut e = estimator(&[2.0, 4.0, 6.0, 8.0]);
        assert_eq!(e.remaining(&[s(5.0)], 0, 4), Some(s(2.0)));
        // A young job is expected to take the average.
        assert_eq!(e.remaining(&[s(1.0)], 0, 4), Some(s(4.0)));
        // Whatever order the jobs ended in.
        let mut e = estimator(&[8.0, 2.0, 6.0]);
        e.ended(s(4.0));
        assert_eq!(e.remaining(&[s(5.0)], 0, 4), Some(s(2.0)));
    }

    #[test]
    fn a_job_longer_than_any_that_ended_gives_no_estimate_alone() {
        let mut e = estimator(&[2.0, 3.0]);
        assert_eq!(e.remaining(&[s(9.0)], 0, 2), None);
        // With jobs waiting, they set the estimate: 2 of 2.5 s on 2 slots.
        assert_eq!(e.remaining(&[s(9.0)], 2, 2), Some(s(2.5)));
    }

    #[test]
    fn waiting_jobs_go_to_the_slot_that_frees_first() {
        // Slots free at 0 and 3 s, jobs of 2 s: they end at 2, 4 (first slot) and 5 s.
        assert_eq!(last_end(&[0, 3], 3, 2), 5);
        assert_eq!(last_end(&[0, 3], 1, 2), 2);
        assert_eq!(last_end(&[7, 7, 7], 7, 10), 37);
        // A million waiting jobs cost no more than a few.
        assert_eq!(last_end(&[0; 8], 1_000_000, 1_000), 125_000_000);
    }

    /// A batch run against a fake clock advanced by `tick`: `durations` in argument order,
    /// at most `slots` at once, a job starting at the first tick with a free slot. Each tick's
    /// time and estimate, and the time the last job ended.
    fn simulate(durations: &[f64], slots: usize, tick: f64) -> (Vec<(f64, Option<Duration>)>, f64) {
        let mut e = Estimator::default();
        let mut next = 0;
        let mut running: Vec<(f64, f64)> = Vec::new(); // (start, duration)
        let mut seen = Vec::new();
        let mut now = 0.0;
        loop {
            running.retain(|&(start, d)| {
                let ended = start + d <= now;
                if ended {
                    e.ended(s(d));
                }
                !ended
            });
            while running.len() < slots && next < durations.len() {
                running.push((now, durations[next]));
                next += 1;
            }
            if running.is_empty() {
                return (seen, now);
            }
            let ages: Vec<Duration> = running.iter().map(|&(start, _)| s(now - start)).collect();
            seen.push((now, e.remaining(&ages, durations.len() - next, slots)));
            now += tick;
        }
    }

    #[test]
    fn on_a_fake_clock_the_eta_is_unknown_then_never_zero_and_bounded() {
        // Long jobs first, then short ones: an estimate from the first ends runs high, one
        // from the short ones low; neither may show 0 s or run away.
        let durations = [
            30.0, 28.0, 25.0, 3.0, 2.0, 2.5, 1.0, 4.0, 3.5, 2.0, 1.5, 20.0,
        ];
        let (seen, _) = simulate(&durations, 3, 0.5);
        for (now, eta) in &seen {
            match eta {
                None => assert!(*now < 25.0, "no estimate at {now} s, after a job ended"),
                Some(eta) => {
                    assert_ne!(shown(Some(*eta)), "ETA 0s", "at {now} s");
                    // Never past what all jobs could take, the longest each, 3 at a time.
                    assert!(eta.as_secs_f64() <= 4.0 * 30.0, "at {now} s: {eta:?}");
                }
            }
        }
    }

    #[test]
    fn on_a_fake_clock_equal_jobs_count_down_to_the_true_end() {
        let (seen, end) = simulate(&[10.0; 10], 4, 1.0);
        assert_eq!(end, 30.0);
        for (now, eta) in seen {
            let want = (now >= 10.0).then(|| s(end - now));
            assert_eq!(eta, want, "at {now} s");
        }
    }

    #[test]
    fn shown_in_whole_seconds_rounded_up() {
        assert_eq!(shown(None), "ETA ?");
        assert_eq!(shown(Some(s(0.2))), "ETA 1s");
        assert_eq!(shown(Some(s(59.0))), "ETA 59s");
        assert_eq!(shown(Some(s(65.0))), "ETA 1m 05s");
        assert_eq!(shown(Some(s(7322.0))), "ETA 2h 02m");
    }
}
