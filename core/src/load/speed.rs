//! A speed figure for one CPU: work done per second of CPU time on a fixed integer loop.
//! Measured in the thread's own CPU time, so a busy machine reports the same speed as an idle
//! one (its load is reported separately); the best of a few short runs evens out cache and
//! frequency noise.

use std::sync::OnceLock;

use nix::time::{clock_gettime, ClockId};

/// Loop iterations per CPU-microsecond (measured once per process).
pub fn per_cpu() -> f64 {
    static SPEED: OnceLock<f64> = OnceLock::new();
    *SPEED.get_or_init(measure)
}

fn cpu_now() -> f64 {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
        .unwrap_or(0.0)
}

fn measure() -> f64 {
    const ROUNDS: u64 = 2_000_000;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = cpu_now();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..ROUNDS {
            // xorshift with a data dependency, so the loop is not folded away.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_add(i);
        }
        std::hint::black_box(x);
        let spent = cpu_now() - start;
        if spent > 0.0 {
            best = best.max(ROUNDS as f64 / spent / 1e6);
        }
    }
    best
}
