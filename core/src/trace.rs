//! `MRUN_TRACE=1`: the time each stage of a checkpoint, restore or migration took, on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Times this process stopped a tracee to run injected syscalls (each a round trip through
/// the scheduler): a stage's count is printed beside its time.
static STOPS: AtomicU64 = AtomicU64::new(0);

/// One more injection stop (see [`STOPS`]).
pub(crate) fn count_stop() {
    STOPS.fetch_add(1, Ordering::Relaxed);
}

pub struct Trace {
    on: bool,
    what: &'static str,
    last: Instant,
    stops: u64,
}

impl Trace {
    pub fn new(what: &'static str) -> Trace {
        Trace {
            on: std::env::var("MRUN_TRACE").is_ok_and(|v| v == "1"),
            what,
            last: Instant::now(),
            stops: STOPS.load(Ordering::Relaxed),
        }
    }

    /// A line of its own: a decision and why.
    pub fn say(&self, line: &str) {
        if self.on {
            eprintln!("mrun trace: {line}");
        }
    }

    /// [`Trace::say`] for a line that costs work to make: made only when tracing (e.g. in
    /// the freeze window).
    pub fn say_with(&self, line: impl FnOnce() -> String) {
        if self.on {
            self.say(&line());
        }
    }

    /// The stage that just ended.
    pub fn mark(&mut self, stage: &str) {
        self.mark_at(stage, Instant::now());
    }

    /// The stage that ended at `now` (at or after the last mark).
    pub fn mark_at(&mut self, stage: &str, now: Instant) {
        if self.on {
            let stops = STOPS.load(Ordering::Relaxed);
            let ms = (now - self.last).as_secs_f64() * 1e3;
            match stops - self.stops {
                0 => eprintln!("mrun trace: {} {stage}: {ms:.1} ms", self.what),
                n => eprintln!("mrun trace: {} {stage}: {ms:.1} ms ({n} stops)", self.what),
            }
            self.last = now;
            self.stops = stops;
        }
    }
}
