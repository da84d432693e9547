//! One migration of a victim job under `mrun`, timed by mrun's own `MRUN_TRACE` lines: an
//! idle job or one that keeps writing, moved with pre-copy or without.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mrun_bench::measure::run_timed;
use mrun_bench::mrun::{Mrun, MrunJob};
use mrun_bench::pattern::Contents;
use mrun_bench::scratch::Scratch;
use mrun_bench::sys::wait_timeout;
use mrun_bench::victim::{field, parse_ready};

/// `--show-trace`: each job's `mrun trace:` lines and its last line (`verified=...`) go to
/// the bench's stderr.
pub static SHOW_TRACE: AtomicBool = AtomicBool::new(false);

/// How the job behaves while it is moved, and how it is moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Off: `MRUN_PRECOPY=0` for the job's `mrun` (plain stop-and-copy).
    pub precopy: bool,
    /// The victim's `write=MBPS`: it rewrites pages of its memory at this rate (MB/s, 10^6
    /// bytes) from before the move to its end. None: it sits in `read(0)`.
    pub write_mbps: Option<f64>,
}

impl Variant {
    /// "idle" or "write 50".
    pub fn job(&self) -> String {
        match self.write_mbps {
            None => "idle".into(),
            Some(r) => format!("write {r}"),
        }
    }

    pub fn precopy_name(&self) -> &'static str {
        if self.precopy {
            "on"
        } else {
            "off"
        }
    }
}

/// One migration, as mrun traced it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// `migrate connect`: a channel to a fresh agent on the node, and the handshake.
    pub connect: Duration,
    /// `migrate pre-copy (the job runs on)`: from the node taking the job to the freeze (the
    /// pre-copy rounds, when there are any; not downtime).
    pub precopy_time: Duration,
    /// `migrate downtime`: from freezing the process at home to the node confirming that the
    /// restored copy runs.
    pub downtime: Duration,
    /// The checkpoint's stages at home, inside the downtime: freeze + state, the dirty pages
    /// (pre-copy: what was written since it was sent), pages, finish.
    pub freeze_state: Duration,
    pub dirty: Duration,
    pub pages: Duration,
    pub finish: Duration,
    /// Wall time of `mrunctl migrate`.
    pub ctl: Duration,
    /// The node's restore helper (`restore` stages, on the job's stderr: see
    /// [`Mrun::trace_node`]): `Precopied`, from its start to the end of the pre-copy streams
    /// it read (None without them); `Memory`, writing the pages into the new process; and
    /// the stages after it that follow the header (Spawn, Clear, Specials, Kernel, Threads,
    /// Run).
    pub node_precopied: Option<Duration>,
    pub node_memory: Option<Duration>,
    pub node_other: Duration,
    /// What the trace said about the pre-copy.
    pub precopy: Precopy,
    /// What the writing job said of its writing (None for an idle job).
    pub written: Option<Written>,
}

/// The pre-copy as the deputy's trace tells it (`mrun trace: pre-copy: ...` lines).
#[derive(Debug, Clone, Default)]
pub struct Precopy {
    /// Rounds sent while the job ran (0: none).
    pub rounds: u32,
    /// Bytes they sent.
    pub sent: u64,
    /// How it ended, in the trace's words: "converged: 120 KiB left", "does not converge: ...",
    /// "off (...)"; "off (MRUN_PRECOPY=0)" when the bench turned it off.
    pub outcome: String,
    /// What the trace says was left to send once frozen (None: pre-copy did not run or
    /// stopped, and everything went frozen).
    pub left: Option<u64>,
    /// At the freeze: `N MiB written since` (sent ahead, then written again).
    pub written_since: Option<u64>,
}

impl Precopy {
    /// Reads the `pre-copy: ...` sentences of `stderr`.
    fn parse(stderr: &str) -> Precopy {
        let mut p = Precopy::default();
        for line in stderr.lines() {
            let Some(said) = line.strip_prefix("mrun trace: pre-copy: ") else {
                continue;
            };
            if let Some((counts, outcome)) = said.split_once("; ") {
                // "3 rounds, 260 MiB sent; converged: 120 KiB left"
                if let Some((rounds, sent)) = counts.split_once(" rounds, ") {
                    if let (Ok(r), Some(b)) = (rounds.parse(), first_size(sent)) {
                        p.rounds = r;
                        p.sent = b;
                        p.outcome = outcome.to_string();
                        p.left = first_size(outcome);
                        continue;
                    }
                }
            }
            if let Some((_, since)) = said.split_once(" still valid, ") {
                // "250 MiB sent ahead still valid, 3 MiB written since"
                p.written_since = first_size(since);
            } else if said.ends_with("; stop-and-copy") {
                // "off (REASON); stop-and-copy", "stopped (E); stop-and-copy", "the last
                // round failed (E); stop-and-copy": everything goes frozen.
                let why = said.trim_end_matches("; stop-and-copy");
                p.outcome = if p.outcome.is_empty() {
                    why.to_string()
                } else {
                    format!("{}; then {why}", p.outcome)
                };
                p.left = None;
            }
        }
        p
    }

    /// Bytes that had to move while the job was frozen, as the trace tells it: what pre-copy
    /// left (or, if more, what was written since it was sent, counted at the freeze); all of
    /// `touched` when pre-copy did not run or gave up.
    pub fn frozen_bytes(&self, touched: u64) -> u64 {
        match self.left {
            Some(left) => left.max(self.written_since.unwrap_or(0)),
            None => touched,
        }
    }
}

/// The first "N KiB" (B, KiB, MiB, GiB) in `text`, in bytes.
fn first_size(text: &str) -> Option<u64> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':' || c == '(')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|w| {
        let n: u64 = w[0].parse().ok()?;
        let unit = match w[1] {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        Some(n * unit)
    })
}

/// The writing job's own account (its `verified=` line).
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Bytes rewritten, over `elapsed`, of which `lost` went by without writing (frozen, or
    /// too late by more than 100 ms).
    pub bytes: u64,
    pub elapsed: Duration,
    pub lost: Duration,
    /// The longest time between two wake-ups of its writer (every 5 ms when it runs): the
    /// downtime as the job lived it, give or take one period.
    pub max_gap: Duration,
}

impl Written {
    fn parse(line: &str) -> Option<Written> {
        let num = |name| field(line, name).and_then(|v| v.parse::<u64>().ok());
        Some(Written {
            bytes: num("written")?,
            elapsed: Duration::from_nanos(num("write_ns")?),
            lost: Duration::from_nanos(num("lost_ns")?),
            max_gap: Duration::from_nanos(num("max_gap_ns")?),
        })
    }

    /// MB/s while it was writing (its lost time left out).
    pub fn rate(&self) -> f64 {
        self.bytes as f64 / self.elapsed.saturating_sub(self.lost).as_secs_f64() / 1e6
    }
}

/// How long any one step with `mib` MiB may take before the bench gives up on it.
pub fn timeout(mib: u64) -> Duration {
    Duration::from_secs(60 + 60 * mib.div_ceil(1024))
}

/// Starts `victim` with `mib` MiB of `contents` under `mrun` (MRUN_TRACE=1), writing or not,
/// migrates it to `node` with `mrunctl migrate`, pre-copy on or off, as `variant` says, then
/// closes its stdin: the job checks its memory on the node and exits, and `mrun` must exit 0.
/// `expected_sum` is the checksum of the baseline's bytes.
#[allow(clippy::too_many_arguments)]
pub fn migrate(
    m: &Mrun,
    dir: &Scratch,
    victim: &Path,
    node: &str,
    mib: u64,
    contents: Contents,
    variant: Variant,
    expected_sum: Option<u64>,
) -> anyhow::Result<Sample> {
    let timeout = timeout(mib);
    let (out, err) = (dir.file("job.out"), dir.file("job.err"));
    let out_file =
        File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let err_file =
        File::create(&err).with_context(|| format!("cannot create {}", err.display()))?;
    let mut cmd = m.command(&m.mrun);
    cmd.env("MRUN_TRACE", "1")
        .arg(victim)
        .arg(mib.to_string())
        .arg(contents.name());
    if !variant.precopy {
        // Read by the deputy (this mrun), which does the move.
        cmd.env("MRUN_PRECOPY", "0");
    }
    if let Some(rate) = variant.write_mbps {
        cmd.arg(format!("write={rate}"));
    }
    let child = cmd
        // A pipe whose write end we hold: the victim blocks reading it, wherever it runs.
        .stdin(Stdio::piped())
        .stdout(out_file)
        .stderr(err_file)
        .spawn()
        .with_context(|| format!("cannot run {}", m.mrun.display()))?;
    let mut job = MrunJob::new(child);
    let said = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let failed = |what: String| {
        anyhow::anyhow!(
            "{what}; mrun's stdout: {:?}; its stderr: {}",
            said(&out),
            said(&err).trim()
        )
    };

    let deadline = Instant::now() + timeout;
    let ready = loop {
        let text = said(&out);
        if text.lines().count() >= 2 && text.ends_with('\n') {
            break parse_ready(&text)?;
        }
        if let Some(status) = job.child.try_wait().context("waitpid on mrun")? {
            return Err(failed(format!(
                "mrun ended before its job was ready ({status})"
            )));
        }
        if Instant::now() > deadline {
            return Err(failed(format!("the job was not ready after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if expected_sum.is_some_and(|s| s != ready.sum) {
        bail!("the victim's checksum {:016x} differs from the baseline's: victim.c and pattern.rs disagree", ready.sum);
    }
    let pid = mrun_bench::mrun::job_pid(&job.child, &m.runtime_dir)?;

    let mut cmd = m.command(&m.mrunctl);
    cmd.args(["migrate", &pid.to_string(), node])
        .stdin(Stdio::null());
    let ctl = run_timed(&mut cmd, dir, "migrate", timeout)?;
    if !ctl.status.success() {
        return Err(failed(format!("{:#}", ctl.failure("mrunctl migrate"))));
    }

    // End of input: the job checks its memory where it now runs, and ends.
    job.stdin = None;
    let status = wait_timeout(&mut job.child, timeout)?.ok_or_else(|| {
        failed(format!(
            "mrun did not end within {timeout:?} of closing the job's stdin"
        ))
    })?;
    let text = said(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("verified="))
        .unwrap_or_default();
    if !status.success() || field(line, "verified") != Some("ok") {
        return Err(failed(format!(
            "the migrated job did not verify its memory (mrun {status})"
        )));
    }
    // Read once the job ended: the node's lines (its restore helper's, through the job's
    // stderr) may come after mrunctl's answer.
    let stderr = said(&err);
    if SHOW_TRACE.load(Ordering::Relaxed) {
        for line in stderr.lines().filter(|l| l.starts_with("mrun trace: ")) {
            eprintln!("  {line}");
        }
        eprintln!("  the job: {line}");
    }
    let trace = Trace::parse(&stderr);
    let (Some(connect), Some(downtime)) =
        (trace.get("migrate connect"), trace.get("migrate downtime"))
    else {
        return Err(failed(
            "mrunctl migrate succeeded but mrun printed no `migrate connect` and \
                           `migrate downtime` trace lines"
                .into(),
        ));
    };
    let stage = |name| trace.get(name).unwrap_or_default();
    let mut precopy = Precopy::parse(&stderr);
    if !variant.precopy {
        precopy.outcome = "off (MRUN_PRECOPY=0)".into();
        precopy.left = None;
    }
    let written = match variant.write_mbps {
        None => None,
        Some(_) => Some(Written::parse(line).ok_or_else(|| {
            failed("the writing job did not say what it wrote (no written=, write_ns=, lost_ns=, max_gap_ns=)".into())
        })?),
    };
    Ok(Sample {
        connect,
        precopy_time: stage("migrate pre-copy"),
        downtime,
        freeze_state: stage("checkpoint freeze") + stage("checkpoint state"),
        dirty: stage("checkpoint dirty pages"),
        pages: stage("checkpoint pages"),
        finish: stage("checkpoint finish"),
        ctl: ctl.elapsed,
        node_precopied: trace.get("restore Precopied"),
        node_memory: trace.get("restore Memory"),
        node_other: ["Spawn", "Clear", "Specials", "Kernel", "Threads", "Run"]
            .iter()
            .map(|s| trace.get(&format!("restore {s}")).unwrap_or_default())
            .sum(),
        precopy,
        written,
    })
}

/// `mrun trace: WHAT STAGE: N ms` lines.
struct Trace(Vec<(String, Duration)>);

impl Trace {
    fn parse(stderr: &str) -> Trace {
        Trace(
            stderr
                .lines()
                .filter_map(|l| l.strip_prefix("mrun trace: "))
                .filter_map(|l| l.rsplit_once(": "))
                .filter_map(|(key, value)| {
                    let ms: f64 = value.split_once(" ms")?.0.parse().ok()?;
                    Some((key.to_string(), Duration::from_secs_f64(ms / 1e3)))
                })
                .collect(),
        )
    }

    /// The first stage whose name starts with `prefix` ("migrate downtime" matches
    /// "migrate downtime (freeze to running on the node)").
    fn get(&self, prefix: &str) -> Option<Duration> {
        self.0
            .iter()
            .find(|(k, _)| k.starts_with(prefix))
            .map(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(lines: &[&str]) -> Precopy {
        let text: Vec<String> = lines.iter().map(|l| format!("mrun trace: {l}")).collect();
        Precopy::parse(&text.join("\n"))
    }

    #[test]
    fn converged() {
        let p = trace(&[
            "pre-copy start: 1.0 ms",
            "pre-copy round 1 (512 MiB): 900.0 ms",
            "pre-copy: 3 rounds, 260 MiB sent; converged: 120 KiB left",
            "migrate pre-copy (the job runs on): 1200.0 ms",
            "pre-copy: 259 MiB sent ahead still valid, 0 MiB written since",
        ]);
        assert_eq!(p.rounds, 3);
        assert_eq!(p.sent, 260 << 20);
        assert_eq!(p.outcome, "converged: 120 KiB left");
        assert_eq!(p.left, Some(120 << 10));
        assert_eq!(p.written_since, Some(0));
        assert_eq!(p.frozen_bytes(512 << 20), 120 << 10);
    }

    #[test]
    fn does_not_converge() {
        let p = trace(&[
            "pre-copy: 2 rounds, 600 MiB sent; does not converge: 80 MiB written during a round of 88 MiB; stop-and-copy of the rest",
            "pre-copy: 500 MiB sent ahead still valid, 85 MiB written since",
        ]);
        assert_eq!(p.rounds, 2);
        assert_eq!(p.left, Some(80 << 20));
        assert!(p.outcome.starts_with("does not converge: 80 MiB"));
        // More was written by the freeze than the last round saw: that went frozen too.
        assert_eq!(p.frozen_bytes(512 << 20), 85 << 20);
    }

    #[test]
    fn too_many_rounds() {
        let p = trace(&[
            "pre-copy: 6 rounds, 700 MiB sent; 6 rounds, 12 MiB left; stop-and-copy of the rest",
        ]);
        assert_eq!(p.rounds, 6);
        assert_eq!(p.left, Some(12 << 20));
    }

    #[test]
    fn off_or_stopped_sends_everything_frozen() {
        let p = trace(&["pre-copy: off (the job holds 1024 KiB, less than 8 MiB); stop-and-copy"]);
        assert_eq!(p.rounds, 0);
        assert_eq!(p.outcome, "off (the job holds 1024 KiB, less than 8 MiB)");
        assert_eq!(p.frozen_bytes(1 << 20), 1 << 20);
        let p = trace(&[
            "pre-copy: 1 rounds, 64 MiB sent; converged: 8 KiB left",
            "pre-copy: the last round failed (EINVAL); stop-and-copy",
        ]);
        assert_eq!(p.left, None);
        assert_eq!(
            p.outcome,
            "converged: 8 KiB left; then the last round failed (EINVAL)"
        );
        assert_eq!(p.frozen_bytes(64 << 20), 64 << 20);
    }

    #[test]
    fn written() {
        let w = Written::parse("verified=ok check_ns=1 unmap_ns=2 threads=1 threads_ok=1 join_ns=3 cpu_ns=4 written=100000000 write_ns=3000000000 lost_ns=1000000000 max_gap_ns=250000000").unwrap();
        assert_eq!(w.max_gap, Duration::from_millis(250));
        assert!((w.rate() - 50.0).abs() < 1e-9);
        assert!(Written::parse("verified=ok check_ns=1").is_none());
    }
}
