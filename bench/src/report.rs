//! The printed result: medians of the samples, one table row per size and contents (or, with
//! `--threads`, per thread count), and the failures in the words of the command that failed;
//! the machine the numbers come from.

use std::time::Duration;

use crate::measure::{CopyTimes, Sample};
use crate::pattern::Contents;

/// The measurements of one size, contents and thread count, or why they stopped.
pub struct Row {
    pub mib: u64,
    pub contents: Contents,
    /// Threads of the victim, the main one included.
    pub threads: u32,
    pub samples: Vec<Sample>,
    pub copies: Vec<CopyTimes>,
    pub failure: Option<String>,
    /// CRIU's dump and restore of the same victim, in the same runs (none when not measured).
    pub criu: Vec<Sample>,
    pub criu_failure: Option<String>,
}

pub const LEGEND: &str = "\
columns (each the median of the runs; GB = 1e9 bytes; touched = size in MiB * 2^20):
  ckpt s      wall time of `mrunctl checkpoint PID -o IMAGE` (it also ends the victim)
  ckpt GB/s   touched / ckpt s
  ckpt CPU/GB CPU seconds (user + system) of the checkpoint per GB touched: mrunctl (and what it
              waited for) plus what the victim used from just before the checkpoint to its end
  image B     image file size in bytes; img/tch = image / touched
  rst raw s   wall time of `mrunctl restore IMAGE </dev/null`: includes the restored victim's
              verification (checksum pass over all its memory, then munmap) and its exit
  verify s    that verification, as timed by the restored victim itself (with threads, also
              waking, joining and checking them)
  rst net s   rst raw s - verify s: the restore proper (plus process start and exit)
  rst GB/s    touched / rst net s
  rst CPU/GB  CPU seconds of the restore per GB touched: mrunctl and every process it waited for
              (the restored victim), less the victim's own verification (its CPU clock)
  out s       BASELINE copy-out: write the same bytes raw to a file next to the image (no fsync),
              from page-aligned memory, just before each checkpoint
  in s        BASELINE copy-in: read that file back into fresh (never touched) page-aligned memory
  ckpt/out    ckpt s / out s;  rst/in = rst net s / in s";

pub fn print_table(rows: &[Row]) {
    println!(
        "{:>6} {:<8} {:>8} {:>9} {:>11} {:>12} {:>7} {:>9} {:>8} {:>9} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "size",
        "contents",
        "ckpt s",
        "ckpt GB/s",
        "ckpt CPU/GB",
        "image B",
        "img/tch",
        "rst raw s",
        "verify s",
        "rst net s",
        "rst GB/s",
        "rst CPU/GB",
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
    let lead = format!("{:>6} {:<8}", size_label(row.mib), row.contents.name());
    let Some(m) = Medians::of(row) else {
        println!("{lead} FAILED (see below)");
        return;
    };
    let touched = (row.mib << 20) as f64;
    let partial = if row.failure.is_some() {
        "  (partial: see below)"
    } else {
        ""
    };
    let gb = touched / 1e9;
    println!(
        "{lead} {:>8.4} {:>9.2} {:>11.3} {:>12} {:>7.3} {:>9.4} {:>8.4} {:>9.4} {:>8.2} {:>10.3} \
         {:>8.4} {:>8.4} {:>7.2}x {:>6.2}x{partial}",
        m.ckpt,
        gb / m.ckpt,
        m.ckpt_cpu / gb,
        m.image,
        m.image as f64 / touched,
        m.raw,
        m.verify,
        m.net,
        gb / m.net,
        m.rst_cpu / gb,
        m.out,
        m.back,
        m.ckpt / m.out,
        m.net / m.back,
    );
}

pub const CRIU_LEGEND: &str = "\
columns (each the median of the runs, interleaved with mrun's: each run copies the bytes, then
mrun and CRIU each checkpoint and restore a fresh victim of the same size and contents, taking
turns at going first; images in the same tmpfs directory):
  dump s      wall time of `criu dump -t PID -D DIR --shell-job` (it also ends the victim)
  GB/s        touched / dump s
  CPU/GB      CPU seconds of the dump per GB touched: criu plus what the victim used from just
              before the dump to its end (CRIU's parasite code runs inside the victim)
  image B     bytes of the image files (*.img, logs left out)
  rst net s   wall time of `criu restore -D DIR --shell-job </dev/null` (criu waits for the
              restored victim) less the victim's verification, as for mrun
  GB/s        touched / rst net s;  CPU/GB: CPU seconds of the restore per GB touched, as for mrun
  dump/out    dump s / out s;  rst/in = rst net s / in s (the baseline copies of the mrun table)
  mrun/CRIU   mrun's median over CRIU's: ckpt s / dump s, rst net s / rst net s, CPU of each,
              image size (below 1 is mrun faster, cheaper or smaller)";

/// CRIU's numbers for every row and mrun's over CRIU's; `absent` (why CRIU was not measured)
/// fills the row instead when it is set.
pub fn print_criu_table(rows: &[Row], absent: Option<&str>) {
    println!(
        "{:>6} {:<8} {:>8} {:>6} {:>7} {:>12} {:>9} {:>6} {:>7} {:>8} {:>7} | mrun/CRIU: {:>5} {:>5} {:>8} {:>7} {:>5}",
        "size",
        "contents",
        "dump s",
        "GB/s",
        "CPU/GB",
        "image B",
        "rst net s",
        "GB/s",
        "CPU/GB",
        "dump/out",
        "rst/in",
        "ckpt",
        "rst",
        "ckpt CPU",
        "rst CPU",
        "image"
    );
    for row in rows {
        let lead = format!("{:>6} {:<8}", size_label(row.mib), row.contents.name());
        if let Some(why) = absent {
            println!("{lead} CRIU {why}");
            continue;
        }
        let Some(c) = Medians::of_samples(&row.criu, row) else {
            println!("{lead} CRIU FAILED (see below)");
            continue;
        };
        let gb = (row.mib << 20) as f64 / 1e9;
        let ratio = |f: fn(&Medians) -> f64| match Medians::of(row) {
            Some(m) => format!("{:.2}x", f(&m) / f(&c)),
            None => "-".to_string(),
        };
        let partial = if row.criu_failure.is_some() {
            "  (partial: see below)"
        } else {
            ""
        };
        println!(
            "{lead} {:>8.4} {:>6.2} {:>7.3} {:>12} {:>9.4} {:>6.2} {:>7.3} {:>7.2}x {:>6.2}x | \
             {:>16} {:>5} {:>8} {:>7} {:>5}{partial}",
            c.ckpt,
            gb / c.ckpt,
            c.ckpt_cpu / gb,
            c.image,
            c.net,
            gb / c.net,
            c.rst_cpu / gb,
            c.ckpt / c.out,
            c.net / c.back,
            ratio(|m| m.ckpt),
            ratio(|m| m.net),
            ratio(|m| m.ckpt_cpu),
            ratio(|m| m.rst_cpu),
            ratio(|m| m.image as f64),
        );
    }
}

/// The original victim's checksum pass next to the restored one's (same work on the same
/// bytes: a slower one would mean the restored memory is slower to read), then the munmap.
/// With threads, also the time the restored victim took to wake, join and check them.
pub fn print_verify_detail(rows: &[Row]) {
    let threaded = rows.iter().any(|r| r.threads > 1);
    println!(
        "victim checksum pass, median s: original (after filling) vs restored; then the restored munmap{}",
        if threaded { "; then waking and joining its other threads" } else { "" }
    );
    for row in rows.iter().filter(|r| !r.samples.is_empty()) {
        let check = median(row.samples.iter().map(|s| s.verify_check));
        let join = median(row.samples.iter().map(|s| s.verify_join));
        let lead = if threaded {
            format!("{:>5} threads ", row.threads)
        } else {
            String::new()
        };
        let join = if threaded {
            format!("  join {join:.4}")
        } else {
            String::new()
        };
        println!(
            "  {lead}{:>5} MiB {:<6}  original {:.4}  restored {:.4}  munmap {:.4}{join}",
            row.mib,
            row.contents.name(),
            median(row.samples.iter().map(|s| s.original_check)),
            check,
            median(
                row.samples
                    .iter()
                    .map(|s| s.verify.saturating_sub(s.verify_check + s.verify_join))
            ),
        );
    }
}

pub fn print_failures(rows: &[Row]) {
    for row in rows {
        if let Some(f) = &row.criu_failure {
            println!("FAILED CRIU {} MiB {}: {f}", row.mib, row.contents.name());
        }
        if let Some(f) = &row.failure {
            let threads = if row.threads > 1 {
                format!(" {} threads", row.threads)
            } else {
                String::new()
            };
            println!(
                "FAILED {} MiB {}{threads}: {f}",
                row.mib,
                row.contents.name()
            );
        }
    }
}

pub const THREADS_LEGEND: &str = "\
columns (each the median of the runs; touched = size in MiB * 2^20; the victim's main thread
touches the memory and blocks in read(0); of the others, one spins and the rest take turns in
pthread_cond_wait, a 100 ms nanosleep loop and FUTEX_WAIT, all on glibc's default stacks):
  threads     threads of the victim, the main one included (checked in /proc before the checkpoint)
  ckpt s      wall time of `mrunctl checkpoint PID -o IMAGE` (it also ends the victim)
  ckpt/1t     ckpt s / ckpt s of the 1-thread row of the same size and contents
  image B     image file size in bytes; img/1t = image / image of the 1-thread row
  rst raw s   wall time of `mrunctl restore IMAGE </dev/null`: includes the restored victim's
              verification and its exit
  verify s    that verification, timed by the victim: checksum pass, munmap, then waking and
              joining every other thread, each of which checks its tid, its __thread index and
              a pattern on its stack (a thread lost or swapped fails the row or hangs it)
  rst net s   rst raw s - verify s: the restore proper (plus process start and exit)
  rst/1t      rst net s / rst net s of the 1-thread row
  out s, in s BASELINE copy-out and copy-in of the same bytes, as in the size table
  ckpt/out    ckpt s / out s;  rst/in = rst net s / in s";

/// The thread table: one row per thread count, each compared with the 1-thread row of the same
/// size and contents (`-` where there is none) and with the baseline copy of the same run.
pub fn print_thread_table(rows: &[Row]) {
    println!(
        "{:>7} {:>6} {:<8} {:>8} {:>7} {:>12} {:>7} {:>9} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>7}",
        "threads",
        "size",
        "contents",
        "ckpt s",
        "ckpt/1t",
        "image B",
        "img/1t",
        "rst raw s",
        "verify s",
        "rst net s",
        "rst/1t",
        "out s",
        "in s",
        "ckpt/out",
        "rst/in"
    );
    for row in rows {
        let lead = format!(
            "{:>7} {:>6} {:<8}",
            row.threads,
            size_label(row.mib),
            row.contents.name()
        );
        let Some(m) = Medians::of(row) else {
            println!("{lead} FAILED (see below)");
            continue;
        };
        let one = rows
            .iter()
            .find(|r| r.threads == 1 && r.mib == row.mib && r.contents == row.contents)
            .and_then(Medians::of);
        let ratio = |f: fn(&Medians) -> f64| match &one {
            Some(o) => format!("{:.2}x", f(&m) / f(o)),
            None => "-".to_string(),
        };
        let partial = if row.failure.is_some() {
            "  (partial: see below)"
        } else {
            ""
        };
        println!(
            "{lead} {:>8.4} {:>7} {:>12} {:>7} {:>9.4} {:>8.4} {:>9.4} {:>7} {:>8.4} {:>8.4} {:>7.2}x {:>6.2}x{partial}",
            m.ckpt,
            ratio(|m| m.ckpt),
            m.image,
            ratio(|m| m.image as f64),
            m.raw,
            m.verify,
            m.net,
            ratio(|m| m.net),
            m.out,
            m.back,
            m.ckpt / m.out,
            m.net / m.back,
        );
    }
}

/// What each extra thread costs: for every row with more than one thread, (its time - the
/// 1-thread row's) / (threads - 1).
pub fn print_per_thread_cost(rows: &[Row]) {
    for row in rows.iter().filter(|r| r.threads > 1) {
        let one = rows
            .iter()
            .find(|r| r.threads == 1 && r.mib == row.mib && r.contents == row.contents)
            .and_then(Medians::of);
        let (Some(m), Some(o)) = (Medians::of(row), one) else {
            continue;
        };
        let extra = f64::from(row.threads - 1);
        println!(
            "  {:>5} threads {:>5} MiB {:<6}  per extra thread: checkpoint {:+.3} ms, restore {:+.3} ms, \
             image {:+.1} KiB",
            row.threads,
            row.mib,
            row.contents.name(),
            (m.ckpt - o.ckpt) / extra * 1e3,
            (m.net - o.net) / extra * 1e3,
            (m.image as f64 - o.image as f64) / extra / 1024.0,
        );
    }
}

/// The median time of each stage mrunctl reported (`MRUN_TRACE=1`), per row, in ms, and what
/// the stages leave out of the wall time: `what` is "checkpoint" or "restore".
pub fn print_stages(rows: &[Row], what: &str) {
    fn pick<'a>(s: &'a Sample, what: &str) -> &'a [(String, Duration)] {
        if what == "checkpoint" {
            &s.checkpoint_stages
        } else {
            &s.restore_stages
        }
    }
    let stages_of = |s| pick(s, what);
    let mut names: Vec<String> = Vec::new();
    for s in rows.iter().flat_map(|r| r.samples.iter()) {
        for (name, _) in stages_of(s) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    if names.is_empty() {
        println!("{what}: mrunctl reported no stage times (MRUN_TRACE=1)");
        return;
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(8);
    let mut head = format!("{:>7} {:>6} {:<8}", "threads", "size", "contents");
    for n in names
        .iter()
        .chain([&"other".to_string(), &"total".to_string()])
    {
        head.push_str(&format!(" {n:>width$}"));
    }
    println!("{head}");
    for row in rows.iter().filter(|r| !r.samples.is_empty()) {
        let mut line = format!(
            "{:>7} {:>6} {:<8}",
            row.threads,
            size_label(row.mib),
            row.contents.name()
        );
        for n in &names {
            let t = median(row.samples.iter().filter_map(|s| {
                stages_of(s)
                    .iter()
                    .find(|(name, _)| name == n)
                    .map(|(_, t)| *t)
            }));
            line.push_str(&format!(" {:>width$.1}", t * 1e3));
        }
        // The wall time the stages do not cover; for a restore, minus the victim's verification.
        let total = |s: &Sample| {
            if what == "checkpoint" {
                s.checkpoint
            } else {
                s.restore_raw.saturating_sub(s.verify)
            }
        };
        let other = median(row.samples.iter().map(|s| {
            total(s).saturating_sub(stages_of(s).iter().map(|(_, t)| *t).sum::<Duration>())
        }));
        let total = median(row.samples.iter().map(total));
        line.push_str(&format!(
            " {:>width$.1} {:>width$.1}",
            other * 1e3,
            total * 1e3
        ));
        println!("{line}");
    }
}

/// The medians of one row's samples and copies, in seconds (image in bytes).
struct Medians {
    ckpt: f64,
    ckpt_cpu: f64,
    rst_cpu: f64,
    image: u64,
    raw: f64,
    verify: f64,
    net: f64,
    out: f64,
    back: f64,
}

impl Medians {
    fn of(row: &Row) -> Option<Medians> {
        Medians::of_samples(&row.samples, row)
    }

    /// The medians of `samples` (mrun's or CRIU's) with the copies of `row`.
    fn of_samples(samples: &[Sample], row: &Row) -> Option<Medians> {
        if samples.is_empty() {
            return None;
        }
        let (out, back) = if row.copies.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                median(row.copies.iter().map(|c| c.out)),
                median(row.copies.iter().map(|c| c.back)),
            )
        };
        Some(Medians {
            ckpt: median(samples.iter().map(|s| s.checkpoint)),
            ckpt_cpu: median(samples.iter().map(|s| s.checkpoint_cpu)),
            rst_cpu: median(samples.iter().map(|s| s.restore_cpu)),
            image: median_u64(samples.iter().map(|s| s.image_bytes)),
            raw: median(samples.iter().map(|s| s.restore_raw)),
            verify: median(samples.iter().map(|s| s.verify)),
            net: median(
                samples
                    .iter()
                    .map(|s| s.restore_raw.saturating_sub(s.verify)),
            ),
            out,
            back,
        })
    }
}

fn size_label(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
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
