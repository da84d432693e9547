//! The printed result: per way the median wall time, each repetition's, and the speedup over
//! home only; the two ratios the issue names; the balancer's moves.

use std::time::Duration;

use mrun_bench::report::median;

use crate::moves::Moves;
use crate::ways::{self, Way};

/// One timed run of one way.
pub struct Run {
    pub way: Way,
    pub wall: Duration,
    /// The balancer's moves during it (mrun's ways only).
    pub moves: Option<Moves>,
}

fn median_of(runs: &[Run], way: Way) -> f64 {
    median(runs.iter().filter(|r| r.way == way).map(|r| r.wall))
}

pub fn print(runs: &[Run]) {
    let home = median_of(runs, Way::HomeOnly);
    println!(
        "{:<18} {:>8} {:>9}  {:<24} balancer moves per rep (out/back)",
        "way", "wall s", "speedup", "each rep s"
    );
    for way in ways::ALL {
        let wall = median_of(runs, way);
        let mine: Vec<&Run> = runs.iter().filter(|r| r.way == way).collect();
        let each: Vec<String> = mine
            .iter()
            .map(|r| format!("{:.2}", r.wall.as_secs_f64()))
            .collect();
        let moves: Vec<String> = mine
            .iter()
            .filter_map(|r| r.moves.as_ref())
            .map(|m| {
                let failed = if m.failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", m.failed.len())
                };
                format!("{}/{}{failed}", m.out, m.back)
            })
            .collect();
        println!(
            "{:<18} {wall:>8.2} {:>8.2}x  {:<24} {}",
            way.label(),
            home / wall,
            each.join(" "),
            moves.join(" ")
        );
    }
    println!();
    let parallel = median_of(runs, Way::Parallel);
    for way in [Way::MrunAll, Way::MrunDefault] {
        let m = median_of(runs, way);
        println!(
            "{}: {:.2}x faster than home only (target >= 1.8x); {:.3}x GNU parallel's wall time \
                  (target <= 1.10x)",
            way.label(),
            home / m,
            m / parallel
        );
    }
    // The first repetition's log, in mrun's words (which job moved when, and why).
    for way in [Way::MrunAll, Way::MrunDefault] {
        if let Some(m) = runs
            .iter()
            .find(|r| r.way == way)
            .and_then(|r| r.moves.as_ref())
        {
            println!();
            println!(
                "{} (first rep): balancer lines of mrun.log (unix time, job, move, reason):",
                way.label()
            );
            if m.lines.is_empty() {
                println!("  (none: no job moved)");
            }
            for line in &m.lines {
                println!("  {}", shorten(line));
            }
        }
    }
}

/// A log line without the scratch directory in the command's paths.
fn shorten(line: &str) -> String {
    line.split(' ')
        .map(|w| match w.rsplit_once('/') {
            Some((dir, file)) if dir.starts_with("/dev/shm/") => file,
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}
