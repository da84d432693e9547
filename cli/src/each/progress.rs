//! What `mrun --each` shows while it runs: on a terminal, a progress bar (done/total, where
//! the running jobs are, ETA: see `eta`); otherwise one plain line per job shown. Job output
//! passes through here too, so that it is never drawn over.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::outcome::Outcome;

/// How often at most the ETA is estimated anew (each estimate goes over every ended job).
const ETA_EVERY: Duration = Duration::from_millis(500);

pub enum Progress {
    Bar {
        bar: ProgressBar,
        /// The ETA shown, and when it was estimated.
        eta: Option<(Instant, String)>,
    },
    Lines {
        done: usize,
        total: usize,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(total: usize) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { done: 0, total };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("mrun: {bar:30} {pos}/{len} · {msg}") {
            bar.set_style(style);
        }
        bar.set_message(format!("starting · {}", super::eta::shown(None)));
        bar.enable_steady_tick(Duration::from_secs(1));
        Progress::Bar { bar, eta: None }
    }

    /// Where the running jobs are now (`home 2 · nodea 3`) and the ETA, when `eta` (called
    /// only for a bar) estimates it.
    pub fn running(&mut self, tally: String, estimate: impl FnOnce() -> Option<Duration>) {
        if let Progress::Bar { bar, eta } = self {
            let tally = if tally.is_empty() {
                "starting".to_string()
            } else {
                tally
            };
            let stale = eta.as_ref().is_none_or(|(at, _)| at.elapsed() >= ETA_EVERY);
            if stale {
                *eta = Some((Instant::now(), super::eta::shown(estimate())));
            }
            let shown = eta.as_ref().map_or("", |(_, text)| text.as_str());
            bar.set_message(format!("{tally} · {shown}"));
        }
    }

    /// A job ended (the bar counts it; its output may be shown later, see [`Progress::show`]).
    pub fn ended(&self) {
        if let Progress::Bar { bar, .. } = self {
            bar.inc(1);
        }
    }

    /// An ended job's output in one piece (stdout, then stderr), then its progress line (on a
    /// terminal only for a failure: the bar shows the rest).
    pub fn show(&mut self, job: &Outcome) {
        match self {
            Progress::Bar { bar, .. } => {
                bar.suspend(|| {
                    write_output(job);
                    if !job.succeeded() {
                        crate::errln!(
                            "mrun: failed {} ({}, on {})",
                            job.spec.display(),
                            job.how(),
                            job.place
                        );
                    }
                });
            }
            Progress::Lines { done, total } => {
                *done += 1;
                write_output(job);
                let verb = if job.succeeded() { "done" } else { "failed" };
                crate::errln!(
                    "mrun: [{done}/{total}] {verb} {} ({}, {:.1} s, on {})",
                    job.spec.display(),
                    job.how(),
                    job.runtime.as_secs_f64(),
                    job.place
                );
            }
        }
    }

    /// A job cannot leave home, and why (a few words): on a terminal the bar's message counts
    /// such jobs by reason; otherwise one line, once per job and reason.
    pub fn stays_home(&self, job: &str, why: &str) {
        if let Progress::Lines { .. } = self {
            crate::errln!("mrun: {} stays home: {why}", crate::jobs::printable(job));
        }
    }

    /// A line of our own (a warning) that must not be drawn over.
    pub fn say(&self, text: &str) {
        match self {
            Progress::Bar { bar, .. } => bar.suspend(|| crate::errln!("{text}")),
            Progress::Lines { .. } => crate::errln!("{text}"),
        }
    }

    /// Removes the bar before the summary.
    pub fn clear(&self) {
        if let Progress::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// A job's captured output, stdout to our stdout and stderr to our stderr, each in one write.
/// A closed stdout must not stop the batch: a write that fails loses that output, nothing else.
fn write_output(job: &Outcome) {
    if !job.stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&job.stdout).and_then(|_| out.flush());
    }
    if !job.stderr.is_empty() {
        let _ = std::io::stderr().lock().write_all(&job.stderr);
    }
}
