//! `MRUN_TRACE=1`: the time each stage of a checkpoint, restore or migration took, on stderr.

use std::time::Instant;

pub struct Trace {
    on: bool,
    what: &'static str,
    last: Instant,
}

impl Trace {
    pub fn new(what: &'static str) -> Trace {
        Trace {
            on: std::env::var("MRUN_TRACE").is_ok_and(|v| v == "1"),
            what,
            last: Instant::now(),
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
        if self.on {
            let now = Instant::now();
            eprintln!(
                "mrun trace: {} {stage}: {:.1} ms",
                self.what,
                (now - self.last).as_secs_f64() * 1e3
            );
            self.last = now;
        }
    }
}
