//! One job under `mrun`, at home or moved to the node before it starts its work, timed by the
//! job itself (`date +%s%N` or Python's `time.time_ns()` around the work, printed as one line
//! "START END" in nanoseconds), and the checks of what it left at home.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mrun_bench::measure::run_timed;
use mrun_bench::mrun::{job_pid, Mrun, MrunJob};
use mrun_bench::scratch::Scratch;
use mrun_bench::sys::wait_timeout;

/// Waits for "go" on stdin (the bench writes it once the job is where it should be), then times
/// its work. Every script exits 3 without working if stdin ends without "go".
const SH_PROLOGUE: &str = r#"set -eu; read go; [ "$go" = go ] || exit 3; s=$(date +%s%N); "#;
const SH_EPILOGUE: &str = r#"; e=$(date +%s%N); echo "$s $e""#;

/// `python3 -c WRITER LEN BLOCK`: reads BLOCK (a file of random bytes, at home, before it
/// moves), waits for "go", then writes LEN bytes (BLOCK again and again) to out.bin in its
/// working directory, closes it and prints the times around that.
const PY_WRITER: &str = r#"
import sys, time
n = int(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    block = memoryview(f.read())
if sys.stdin.readline() != "go\n":
    sys.exit(3)
s = time.time_ns()
with open("out.bin", "wb") as out:
    left = n
    while left:
        k = min(left, len(block))
        out.write(block[:k])
        left -= k
e = time.time_ns()
print(s, e)
"#;

/// What a job does, as the command line under `mrun`.
pub enum Work {
    /// `cat in.bin > /dev/null`.
    Read,
    /// Python writes LEN bytes of BLOCK to out.bin.
    Write { len: u64, block: std::path::PathBuf },
    /// `cat in.bin > out.bin`.
    Copy,
    /// `cat small/* > /dev/null`.
    SmallFiles,
}

impl Work {
    pub fn describe(&self) -> &'static str {
        match self {
            Work::Read => "cat in.bin > /dev/null",
            Work::Write { .. } => "python3 writes out.bin",
            Work::Copy => "cat in.bin > out.bin",
            Work::SmallFiles => "cat small/* > /dev/null",
        }
    }

    fn argv(&self) -> Vec<OsString> {
        let sh = |work: &str| -> Vec<OsString> {
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("{SH_PROLOGUE}{work}{SH_EPILOGUE}").into(),
            ]
        };
        match self {
            Work::Read => sh("cat in.bin > /dev/null"),
            Work::Copy => sh("cat in.bin > out.bin"),
            Work::SmallFiles => sh("cat small/* > /dev/null"),
            Work::Write { len, block } => vec![
                "python3".into(),
                "-c".into(),
                PY_WRITER.into(),
                len.to_string().into(),
                block.into(),
            ],
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, Copy)]
pub struct Ran {
    /// The work as the job timed it.
    pub work: Duration,
    /// From writing "go" to mrun's exit (the work, the job's exit, mrun's end).
    pub wall: Duration,
}

/// Starts `mrun WORK` in `cwd` (stdin a pipe the bench holds, stdout and stderr files), moves
/// it to `node` if given, tells it to go and waits for its end.
pub fn run(
    m: &Mrun,
    dir: &Scratch,
    cwd: &Path,
    work: &Work,
    node: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Ran> {
    let (out, err) = (dir.file("job.out"), dir.file("job.err"));
    let said = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let child = m
        .command(&m.mrun)
        // Moves only when the bench asks.
        .env("MRUN_BALANCE", "off")
        .args(work.argv())
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(File::create(&out).with_context(|| format!("cannot create {}", out.display()))?)
        .stderr(File::create(&err).with_context(|| format!("cannot create {}", err.display()))?)
        .spawn()
        .with_context(|| format!("cannot run {}", m.mrun.display()))?;
    let mut job = MrunJob::new(child);
    let pid = job_pid(&job.child, &m.runtime_dir)?;
    let place = node.unwrap_or("home");

    if let Some(node) = node {
        let mut cmd = m.command(&m.mrunctl);
        cmd.args(["migrate", &pid.to_string(), node])
            .env("MRUN_BALANCE", "off")
            .stdin(Stdio::null());
        let ctl = run_timed(&mut cmd, dir, "migrate", Duration::from_secs(120))?;
        if !ctl.status.success() || !ctl.stdout.contains("now runs on") {
            bail!(
                "the move of `{}` to {node} (which does not see home's data directory) failed: \
                 {:#}; mrun's stderr: {:?}. Until mrun serves home's files to such a node \
                 (issue 12), this is where the bench stops",
                work.describe(),
                ctl.failure("mrunctl migrate"),
                said(&err).trim()
            );
        }
    }

    let go = Instant::now();
    if let Some(mut stdin) = job.stdin.take() {
        stdin
            .write_all(b"go\n")
            .context("cannot tell the job to go")?;
    }
    let Some(status) = wait_timeout(&mut job.child, timeout)? else {
        bail!(
            "`{}` on {place} did not end within {timeout:?}; its stderr so far: {:?}",
            work.describe(),
            said(&err).trim()
        );
    };
    let wall = go.elapsed();
    let text = said(&out);
    if !status.success() {
        bail!(
            "`{}` failed on {place} ({status}): {}{}",
            work.describe(),
            said(&err).trim(),
            if node.is_some() {
                " (a node that does not see home's data directory: mrun must serve home's files \
                 there, issue 12)"
            } else {
                ""
            }
        );
    }
    let stamps: Vec<u128> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [start, end] = stamps[..] else {
        bail!(
            "`{}` on {place} printed no \"START END\" line: {text:?}",
            work.describe()
        );
    };
    let ns = u64::try_from(end.saturating_sub(start)).unwrap_or(u64::MAX);
    Ok(Ran {
        work: Duration::from_nanos(ns),
        wall,
    })
}

/// Whether `path` holds exactly `len` bytes of `pattern` repeated (the last one cut).
pub fn check_repeated(path: &Path, pattern: &[u8], len: u64) -> anyhow::Result<()> {
    let got = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if got != len {
        bail!(
            "{} at home holds {got} bytes, not the {len} the job wrote: its writes did not land \
             in home's file",
            path.display()
        );
    }
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; pattern.len()];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(pattern.len() as u64) as usize;
        f.read_exact(&mut buf[..n])
            .with_context(|| format!("cannot read {}", path.display()))?;
        if buf[..n] != pattern[..n] {
            bail!(
                "{} at home differs from what the job wrote, in the {} bytes from offset {at}",
                path.display(),
                n
            );
        }
        at += n as u64;
    }
    Ok(())
}

/// Whether the files `a` and `b` hold the same bytes.
pub fn check_same(a: &Path, b: &Path) -> anyhow::Result<()> {
    let (la, lb) = (
        std::fs::metadata(a).map(|m| m.len()).unwrap_or(0),
        std::fs::metadata(b).map(|m| m.len()).unwrap_or(0),
    );
    if la != lb {
        bail!(
            "{} at home holds {la} bytes, {} {lb}: the job's writes did not land in home's file",
            a.display(),
            b.display()
        );
    }
    let (mut fa, mut fb) = (
        File::open(a).with_context(|| format!("cannot open {}", a.display()))?,
        File::open(b).with_context(|| format!("cannot open {}", b.display()))?,
    );
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let mut at = 0u64;
    while at < la {
        let n = (la - at).min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).context("read")?;
        fb.read_exact(&mut bb[..n]).context("read")?;
        if ba[..n] != bb[..n] {
            bail!(
                "{} differs from {} in the {n} bytes from offset {at}",
                a.display(),
                b.display()
            );
        }
        at += n as u64;
    }
    Ok(())
}
