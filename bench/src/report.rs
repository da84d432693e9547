//! The printed result: medians of the samples, one table row per size and contents, and the
//! failures in the words of the command that failed; the machine the numbers come from.

use std::time::Duration;

use crate::measure::{CopyTimes, Sample};
use crate::pattern::Contents;

/// The measurements of one size and contents, or why they stopped.
pub struct Row {
    pub mib: u64,
    pub contents: Contents,
    pub samples: Vec<Sample>,
    pub copies: Vec<CopyTimes>,
    pub failure: Option<String>,
}

pub const LEGEND: &str = "\
columns (each the median of the runs; GB = 1e9 bytes; touched = size in MiB * 2^20):
  ckpt s      wall time of `mrunctl checkpoint PID -o IMAGE` (it also ends the victim)
  ckpt GB/s   touched / ckpt s
  image B     image file size in bytes; img/tch = image / touched
  rst raw s   wall time of `mrunctl restore IMAGE </dev/null`: includes the restored victim's
              verification (checksum pass over all its memory, then munmap) and its exit
  verify s    that verification, as timed by the restored victim itself
  rst net s   rst raw s - verify s: the restore proper (plus process start and exit)
  rst GB/s    touched / rst net s
  out s       BASELINE copy-out: write the same bytes raw to a file next to the image (no fsync),
              from page-aligned memory, just before each checkpoint
  in s        BASELINE copy-in: read that file back into fresh (never touched) page-aligned memory
  ckpt/out    ckpt s / out s;  rst/in = rst net s / in s";

pub fn print_table(rows: &[Row]) {
    println!(
        "{:>6} {:<8} {:>8} {:>9} {:>12} {:>7} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "size",
        "contents",
        "ckpt s",
        "ckpt GB/s",
        "image B",
        "img/tch",
        "rst raw s",
        "verify s",
        "rst net s",
        "rst GB/s",
        "out s",
        "in s",
        "ckpt/out",
        "rst/in"
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
    let lead = format!("{size:>6} {:<8}", row.contents.name());
    if row.samples.is_empty() {
        println!("{lead} FAILED (see below)");
        return;
    }
    let touched = (row.mib << 20) as f64;
    let ckpt = median(row.samples.iter().map(|s| s.checkpoint));
    let raw = median(row.samples.iter().map(|s| s.restore_raw));
    let verify = median(row.samples.iter().map(|s| s.verify));
    let net = median(
        row.samples
            .iter()
            .map(|s| s.restore_raw.saturating_sub(s.verify)),
    );
    let image = median_u64(row.samples.iter().map(|s| s.image_bytes));
    let (out, back) = if row.copies.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (
            median(row.copies.iter().map(|c| c.out)),
            median(row.copies.iter().map(|c| c.back)),
        )
    };
    let partial = if row.failure.is_some() {
        "  (partial: see below)"
    } else {
        ""
    };
    println!(
        "{lead} {ckpt:>8.4} {:>9.2} {image:>12} {:>7.3} {raw:>9.4} {verify:>8.4} {net:>9.4} {:>8.2} \
         {out:>8.4} {back:>8.4} {:>7.2}x {:>6.2}x{partial}",
        touched / ckpt / 1e9,
        image as f64 / touched,
        touched / net / 1e9,
        ckpt / out,
        net / back,
    );
}

/// The original victim's checksum pass next to the restored one's (same work on the same
/// bytes: a slower one would mean the restored memory is slower to read), then the munmap.
pub fn print_verify_detail(rows: &[Row]) {
    println!("victim checksum pass, median s: original (after filling) vs restored; then the restored munmap");
    for row in rows.iter().filter(|r| !r.samples.is_empty()) {
        let check = median(row.samples.iter().map(|s| s.verify_check));
        println!(
            "  {:>5} MiB {:<6}  original {:.4}  restored {:.4}  munmap {:.4}",
            row.mib,
            row.contents.name(),
            median(row.samples.iter().map(|s| s.original_check)),
            check,
            median(row.samples.iter().map(|s| s.verify)) - check,
        );
    }
}

pub fn print_failures(rows: &[Row]) {
    for row in rows {
        if let Some(f) = &row.failure {
            println!("FAILED {} MiB {}: {f}", row.mib, row.contents.name());
        }
    }
}

/// Median in seconds.
pub fn median(values: impl Iterator<Item = Duration>) -> f64 {
    let mut v: Vec<f64> = values.map(|d| d.as_secs_f64()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// CPUs, model, kernel, memory and THP setting of this machine, on one line.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown");
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = mem
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .unwrap_or("MemTotal: unknown");
    format!(
        "nproc {nproc}, {model}, kernel {}, {}, THP {}",
        kernel.trim(),
        mem.split_whitespace().collect::<Vec<_>>().join(" "),
        thp.trim()
    )
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
