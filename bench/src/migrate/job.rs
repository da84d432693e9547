//! One migration of a victim job under `mrun`, timed by mrun's own `MRUN_TRACE` lines.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mrun_bench::measure::run_timed;
use mrun_bench::mrun::{Mrun, MrunJob};
use mrun_bench::pattern::Contents;
use mrun_bench::scratch::Scratch;
use mrun_bench::sys::wait_timeout;
use mrun_bench::victim::{field, parse_ready};

/// One migration, as mrun traced it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `migrate connect`: a channel to a fresh agent on the node, and the handshake.
    pub connect: Duration,
    /// `migrate downtime`: from freezing the process at home to the node confirming that the
    /// restored copy runs.
    pub downtime: Duration,
    /// The checkpoint's stages at home, inside the downtime: freeze + state, pages, finish.
    pub freeze_state: Duration,
    pub pages: Duration,
    pub finish: Duration,
    /// Wall time of `mrunctl migrate`.
    pub ctl: Duration,
}

/// How long any one step with `mib` MiB may take before the bench gives up on it.
pub fn timeout(mib: u64) -> Duration {
    Duration::from_secs(60 + 60 * mib.div_ceil(1024))
}

/// Starts `victim` with `mib` MiB of `contents` under `mrun` (MRUN_TRACE=1), migrates it to
/// `node` with `mrunctl migrate`, then closes its stdin: the job checks its memory on the node
/// and exits, and `mrun` must exit 0. `expected_sum` is the checksum of the baseline's bytes.
pub fn migrate(
    m: &Mrun,
    dir: &Scratch,
    victim: &Path,
    node: &str,
    mib: u64,
    contents: Contents,
    expected_sum: Option<u64>,
) -> anyhow::Result<Sample> {
    let timeout = timeout(mib);
    let (out, err) = (dir.file("job.out"), dir.file("job.err"));
    let out_file =
        File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let err_file =
        File::create(&err).with_context(|| format!("cannot create {}", err.display()))?;
    let child = m
        .command(&m.mrun)
        .env("MRUN_TRACE", "1")
        .arg(victim)
        .arg(mib.to_string())
        .arg(contents.name())
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
    let trace = Trace::parse(&said(&err));
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
    Ok(Sample {
        connect,
        downtime,
        freeze_state: stage("checkpoint freeze") + stage("checkpoint state"),
        pages: stage("checkpoint pages"),
        finish: stage("checkpoint finish"),
        ctl: ctl.elapsed,
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
                    let ms: f64 = value.strip_suffix(" ms")?.parse().ok()?;
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
