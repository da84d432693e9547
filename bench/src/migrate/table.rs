//! The printed result: one row per size and contents (medians of its runs), the first
//! connection, and the start cost of `mrun`.

use std::time::Duration;

use mrun_bench::pattern::Contents;
use mrun_bench::report::median;

use crate::job::Sample;
use crate::spawn::Spawns;
use mrun_bench::node::Push;

/// The measurements of one size and contents, or why they stopped.
pub struct Row {
    pub mib: u64,
    pub contents: Contents,
    pub samples: Vec<Sample>,
    pub pushes: Vec<Push>,
    pub failure: Option<String>,
}

pub const LEGEND: &str = "\
columns (each the median of the runs; GB = 1e9 bytes; touched = size in MiB * 2^20):
  down ms     migration downtime: `mrun trace: migrate downtime` (from freezing the process at home
              to the node confirming that the restored copy runs)
  GB/s        touched / down ms
  conn ms     `mrun trace: migrate connect`: a channel on the daemon's SSH connection, a fresh
              mrun-agent on the node, the handshake (before the freeze: not downtime)
  ctl ms      wall time of `mrunctl migrate JOB nodea` (its start, conn, down, the answer)
  frz ms      `checkpoint freeze` + `checkpoint state`: stopping the process, reading its state
  pages ms    `checkpoint pages`: reading, compressing (zstd -1) and sending its memory, at the
              pace the SSH channel and the node's restore take it
  fin ms      `checkpoint finish`: the end of the image
  tail ms     down - (frz + pages + fin): the node's last restore steps and its confirmation
  push ms     BASELINE: the same bytes from memory through `ssh nodea 'cat > /dev/null'` (OpenSSH,
              run right before each migration; from the remote command's start to ssh's exit)
  push GB/s   touched / push ms
  down/push   down ms / push ms";

pub fn print_migrations(rows: &[Row]) {
    println!(
        "{:>6} {:<8} {:>4} {:>9} {:>6} {:>8} {:>8} {:>7} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "size",
        "contents",
        "runs",
        "down ms",
        "GB/s",
        "conn ms",
        "ctl ms",
        "frz ms",
        "pages ms",
        "fin ms",
        "tail ms",
        "push ms",
        "push GB/s",
        "down/push"
    );
    for row in rows {
        print_row(row);
    }
}

fn print_row(row: &Row) {
    let size = if row.mib >= 1024 && row.mib % 1024 == 0 {
        format!("{}G", row.mib / 1024)
    } else {
        format!("{}M", row.mib)
    };
    let lead = format!(
        "{size:>6} {:<8} {:>4}",
        row.contents.name(),
        row.samples.len()
    );
    if row.samples.is_empty() {
        println!("{lead} FAILED (see below)");
        return;
    }
    let touched = (row.mib << 20) as f64;
    let ms = |values: Vec<Duration>| median(values.into_iter()) * 1e3;
    let s = &row.samples;
    let down = ms(s.iter().map(|s| s.downtime).collect());
    let tail = ms(s
        .iter()
        .map(|s| {
            s.downtime
                .saturating_sub(s.freeze_state + s.pages + s.finish)
        })
        .collect());
    let push = ms(row.pushes.iter().map(|p| p.push).collect());
    let partial = if row.failure.is_some() {
        "  (partial: see below)"
    } else {
        ""
    };
    println!(
        "{lead} {down:>9.1} {:>6.2} {:>8.1} {:>8.1} {:>7.1} {:>8.1} {:>7.1} {tail:>7.1} {push:>9.1} {:>9.2} {:>8.2}x{partial}",
        touched / down / 1e6,
        ms(s.iter().map(|s| s.connect).collect()),
        ms(s.iter().map(|s| s.ctl).collect()),
        ms(s.iter().map(|s| s.freeze_state).collect()),
        ms(s.iter().map(|s| s.pages).collect()),
        ms(s.iter().map(|s| s.finish).collect()),
        touched / push / 1e6,
        down / push,
    );
}

pub fn print_failures(rows: &[Row]) {
    for row in rows {
        if let Some(f) = &row.failure {
            println!("FAILED {} MiB {}: {f}", row.mib, row.contents.name());
        }
    }
}

pub const SPAWN_LEGEND: &str = "\
start cost: `mrun CMD` against plain `CMD`, run alternately, each from spawn to reaping (stdin
/dev/null, output to /dev/null); med = median, p90 = 90th percentile (nearest rank), in ms";

pub fn print_spawns(all: &[Spawns]) {
    println!(
        "{:<16} {:>4} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "command",
        "runs",
        "plain med",
        "plain p90",
        "mrun med",
        "mrun p90",
        "med ratio",
        "p90 ratio",
        "+med ms"
    );
    for s in all {
        let (pm, p9) = (median(s.plain.iter().copied()) * 1e3, p90(&s.plain) * 1e3);
        let (mm, m9) = (median(s.mrun.iter().copied()) * 1e3, p90(&s.mrun) * 1e3);
        println!(
            "{:<16} {:>4} {pm:>9.2} {p9:>9.2} {mm:>8.2} {m9:>8.2} {:>8.2}x {:>8.2}x {:>8.2}",
            s.command,
            s.plain.len(),
            mm / pm,
            m9 / p9,
            mm - pm
        );
    }
}

/// 90th percentile in seconds, nearest rank.
fn p90(values: &[Duration]) -> f64 {
    let mut v: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    let rank = (v.len() * 9).div_ceil(10).max(1);
    v.get(rank - 1).copied().unwrap_or(f64::NAN)
}
