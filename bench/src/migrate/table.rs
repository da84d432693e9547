//! The printed result: one row per size, contents, job (idle or writing) and pre-copy on or
//! off (medians of its runs) against the SSH push of the same bytes and issue 13's downtime
//! target; the checkpoint's stages inside the downtime; the first connection; and the start
//! cost of `mrun`.

use std::time::Duration;

use mrun_bench::node::Push;
use mrun_bench::pattern::Contents;
use mrun_bench::report::median;

use crate::job::{Sample, Variant};
use crate::spawn::Spawns;

/// The runs of one size and contents: the baseline pushes (one per run, shared by the
/// variants of that run) and one row per variant.
pub struct Group {
    pub mib: u64,
    pub contents: Contents,
    pub pushes: Vec<Push>,
    pub rows: Vec<Row>,
}

/// The migrations of one variant, or why they stopped.
pub struct Row {
    pub variant: Variant,
    pub samples: Vec<Sample>,
    pub failure: Option<String>,
}

/// Issue 13, item 3: downtime at most 1.2 x (bytes that must move while frozen / measured link
/// throughput) + 20 ms.
const TARGET_FACTOR: f64 = 1.2;
const TARGET_PLUS: Duration = Duration::from_millis(20);

pub const LEGEND: &str = "\
columns (each the median of the runs; MB = 1e6 bytes; touched = size in MiB * 2^20):
  job         idle: the job sits in read(0) while it is moved; write R: a thread of the job
              rewrites whole 4 KiB pages at random over all of its memory, R MB/s, from before the
              move until the bench ends it on the node
  pre-copy    on: mrun's default (memory sent in rounds while the job runs, then the freeze);
              off: MRUN_PRECOPY=0 for the job's mrun (stop-and-copy)
  down ms     migration downtime: `mrun trace: migrate downtime` (from the freeze at home to the
              node confirming that the restored copy runs)
  gap ms      writing job only: the longest time its writer did not run (it wakes every 5 ms):
              the downtime as the job itself lived it, give or take 5 ms
  frozen MiB  what had to move while frozen, as the trace says: pre-copy's `N KiB left` (or, if
              more, `N MiB written since` at the freeze); the whole touched memory without
              pre-copy, or when it did not run
  target ms   issue 13: 1.2 x frozen / push throughput (push MB/s) + 20 ms;  meets: down <= target
  down/push   down ms / push ms (push moves the whole touched memory)
  pre ms      `mrun trace: migrate pre-copy (the job runs on)`: from the node taking the job to the
              freeze: the rounds, sent while the job runs (not downtime)
  rounds      pre-copy rounds; sent MiB: what they sent (both from `mrun trace: pre-copy: N rounds,
              M MiB sent; ...`)
  push ms     BASELINE: the touched bytes from memory through `ssh nodea 'cat > /dev/null'`
              (OpenSSH, once per run, right before that run's migrations; from the remote
              command's start to ssh's exit); push MB/s = touched / push ms
  wr MB/s     writing job only: what it rewrote per second while it ran (frozen time left out)
  pre-copy, as traced  the trace's sentence on how pre-copy ended (converged, does not converge,
              off and why), of the run with the median downtime";

pub const STAGE_LEGEND: &str = "\
where the time goes, median ms: conn = `migrate connect` (a channel on the daemon's SSH
connection, a fresh mrun-agent, the handshake; before pre-copy and the freeze); ctl = wall time of
`mrunctl migrate`; inside the downtime, the checkpoint's stages at home: frz = `freeze` + `state`,
dirty = `dirty pages` (pre-copy: what was written since it was sent), pages = `pages` (reading,
compressing and sending memory at the pace the SSH channel and the node's restore take it), fin
= `finish`; tail = down - (frz + dirty + pages + fin): the node's last restore steps and its
confirmation. The node's restore helper, from its own trace (the agent runs with MRUN_TRACE=1;
its lines reach the job's stderr): n.pre = `restore Precopied`, from its start to the end of the
pre-copy streams it read; lag = n.pre - pre ms (pre ms: see above), about how long after the
freeze the node was still taking in pre-copy data (an upper bound: the helper starts when the
node is asked to take the job, a little before pre ms starts);
n.mem = `restore Memory`, writing the pages into the new process (with stop-and-copy it overlaps
pages: the image streams in); n.oth = its other stages after the header (Spawn, Clear,
Specials, Kernel, Threads, Run)";

fn size_name(mib: u64) -> String {
    if mib >= 1024 && mib % 1024 == 0 {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

fn lead(g: &Group, r: &Row) -> String {
    format!(
        "{:>5} {:<8} {:<9} {:<8} {:>4}",
        size_name(g.mib),
        g.contents.name(),
        r.variant.job(),
        r.variant.precopy_name(),
        r.samples.len()
    )
}

fn ms(values: impl Iterator<Item = Duration>) -> f64 {
    median(values) * 1e3
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The sample of the median downtime (the lower one of an even count).
fn median_sample(samples: &[Sample]) -> Option<&Sample> {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.downtime);
    sorted.get((sorted.len().max(1) - 1) / 2).copied()
}

/// "3", or "3-4" when the runs differ.
fn span(values: impl Iterator<Item = u32>) -> String {
    let v: Vec<u32> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".into(),
    }
}

/// A row's verdict against issue 13's target, from its medians.
pub struct Verdict {
    pub down_ms: f64,
    pub target_ms: f64,
    pub frozen: f64,
}

impl Verdict {
    pub fn of(g: &Group, r: &Row) -> Option<Verdict> {
        if r.samples.is_empty() || g.pushes.is_empty() {
            return None;
        }
        let touched = g.mib << 20;
        let push = median(g.pushes.iter().map(|p| p.push));
        let link = touched as f64 / push; // bytes per second
        let frozen = median_f64(
            r.samples
                .iter()
                .map(|s| s.precopy.frozen_bytes(touched) as f64)
                .collect(),
        );
        Some(Verdict {
            down_ms: ms(r.samples.iter().map(|s| s.downtime)),
            target_ms: (TARGET_FACTOR * frozen / link + TARGET_PLUS.as_secs_f64()) * 1e3,
            frozen,
        })
    }

    pub fn meets(&self) -> bool {
        self.down_ms <= self.target_ms
    }
}

pub fn print_migrations(groups: &[Group]) {
    println!(
        "{:>5} {:<8} {:<9} {:<8} {:>4} {:>8} {:>7} {:>10} {:>9} {:<5} {:>9} {:>8} {:>6} {:>8} {:>8} {:>9} {:>7}  pre-copy, as traced",
        "size", "contents", "job", "pre-copy", "runs", "down ms", "gap ms", "frozen MiB",
        "target ms", "meets", "down/push", "pre ms", "rounds", "sent MiB", "push ms", "push MB/s",
        "wr MB/s"
    );
    for g in groups {
        for r in &g.rows {
            print_row(g, r);
        }
    }
}

fn print_row(g: &Group, r: &Row) {
    let lead = lead(g, r);
    let (Some(v), Some(mid)) = (Verdict::of(g, r), median_sample(&r.samples)) else {
        println!("{lead} FAILED (see below)");
        return;
    };
    let s = &r.samples;
    let touched = (g.mib << 20) as f64;
    let push = ms(g.pushes.iter().map(|p| p.push));
    let dash = || "-".to_string();
    let writes: Vec<_> = s.iter().filter_map(|s| s.written).collect();
    let (gap, rate) = if writes.is_empty() {
        (dash(), dash())
    } else {
        (
            format!("{:.1}", ms(writes.iter().map(|w| w.max_gap))),
            format!(
                "{:.1}",
                median_f64(writes.iter().map(|w| w.rate()).collect())
            ),
        )
    };
    let partial = if r.failure.is_some() {
        "  (partial: see below)"
    } else {
        ""
    };
    println!(
        "{lead} {:>8.1} {gap:>7} {:>10.2} {:>9.1} {:<5} {:>8.3}x {:>8.1} {:>6} {:>8.1} {push:>8.1} {:>9.1} {rate:>7}  {}{partial}",
        v.down_ms,
        v.frozen / f64::from(1u32 << 20),
        v.target_ms,
        if v.meets() { "yes" } else { "NO" },
        v.down_ms / push,
        ms(s.iter().map(|s| s.precopy_time)),
        span(s.iter().map(|s| s.precopy.rounds)),
        median_f64(s.iter().map(|s| s.precopy.sent as f64).collect()) / f64::from(1u32 << 20),
        touched / push / 1e3,
        mid.precopy.outcome,
    );
}

pub fn print_stages(groups: &[Group]) {
    println!(
        "{:>5} {:<8} {:<9} {:<8} {:>4} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7} {:>8} {:>8}",
        "size", "contents", "job", "pre-copy", "runs", "conn ms", "ctl ms", "down ms", "frz ms",
        "dirty ms", "pages ms", "fin ms", "tail ms", "n.pre ms", "lag ms", "n.mem ms", "n.oth ms"
    );
    for g in groups {
        for r in &g.rows {
            let lead = lead(g, r);
            let s = &r.samples;
            if s.is_empty() {
                println!("{lead} FAILED (see below)");
                continue;
            }
            let tail = ms(s.iter().map(|s| {
                s.downtime
                    .saturating_sub(s.freeze_state + s.dirty + s.pages + s.finish)
            }));
            // The node's, where its trace has them (else "-").
            let node = |values: Vec<Option<f64>>| -> String {
                let v: Vec<f64> = values.into_iter().flatten().collect();
                if v.is_empty() {
                    "-".into()
                } else {
                    format!("{:.1}", median_f64(v))
                }
            };
            let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
            println!(
                "{lead} {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>8.1} {:>8.1} {:>7.1} {tail:>7.1} {:>8} {:>7} {:>8} {:>8}",
                ms(s.iter().map(|s| s.connect)),
                ms(s.iter().map(|s| s.ctl)),
                ms(s.iter().map(|s| s.downtime)),
                ms(s.iter().map(|s| s.freeze_state)),
                ms(s.iter().map(|s| s.dirty)),
                ms(s.iter().map(|s| s.pages)),
                ms(s.iter().map(|s| s.finish)),
                node(s.iter().map(|s| secs(s.node_precopied)).collect()),
                node(s
                    .iter()
                    .map(|s| secs(s.node_precopied).map(|n| n - secs(Some(s.precopy_time)).unwrap_or(0.0)))
                    .collect()),
                node(s.iter().map(|s| secs(s.node_memory)).collect()),
                node(s
                    .iter()
                    .map(|s| s.node_memory.map(|_| s.node_other.as_secs_f64() * 1e3))
                    .collect()),
            );
        }
    }
}

/// "issue 13's downtime target ... met by N of M rows (pre-copy on: ..., off: ...)".
pub fn print_summary(groups: &[Group]) {
    let mut on = (0, 0);
    let mut off = (0, 0);
    for g in groups {
        for r in &g.rows {
            if let Some(v) = Verdict::of(g, r) {
                let count = if r.variant.precopy { &mut on } else { &mut off };
                count.0 += usize::from(v.meets());
                count.1 += 1;
            }
        }
    }
    println!(
        "issue 13's downtime target (1.2 x frozen / link + 20 ms) met by {} of {} rows (pre-copy on: {} of {}; off: {} of {})",
        on.0 + off.0,
        on.1 + off.1,
        on.0,
        on.1,
        off.0,
        off.1
    );
}

pub fn print_failures(groups: &[Group]) {
    for g in groups {
        for r in &g.rows {
            if let Some(f) = &r.failure {
                println!(
                    "FAILED {} MiB {} {}, pre-copy {}: {f}",
                    g.mib,
                    g.contents.name(),
                    r.variant.job(),
                    r.variant.precopy_name()
                );
            }
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
