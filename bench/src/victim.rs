//! The victim program: compiled from the embedded `victim.c` at run time, started with its
//! stdin on a pipe the bench keeps open (so it blocks in `read(0)`) and its stdout on a file
//! the bench polls for the "ready" report.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::pattern::Contents;

const SOURCE: &str = include_str!("victim.c");

/// Compiles the victim with `cc -O2 -pthread` into `dir`.
pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    let src = dir.join("victim.c");
    let exe = dir.join("victim");
    std::fs::write(&src, SOURCE).with_context(|| format!("cannot write {}", src.display()))?;
    let out = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .context("cannot run cc (a C compiler is needed to build the victim)")?;
    if !out.status.success() {
        bail!(
            "cc failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(exe)
}

/// What the victim printed once its memory was filled.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Checksum of its memory.
    pub sum: u64,
    /// Its checksum pass over the whole memory, right after filling it.
    pub check: Duration,
}

/// A running victim; killed and reaped when dropped.
pub struct Victim {
    child: Child,
    /// Held open so that the victim's `read(0)` blocks.
    stdin: Option<ChildStdin>,
    pub ready: Ready,
    /// Reaped by `end_cpu` (behind `Child`'s back: it must not wait or signal again).
    reaped: bool,
}

impl Victim {
    /// Starts `exe` with `mib` MiB of `contents` and `threads` threads (the main one included)
    /// and waits until it reports ready. Its stdout goes to `out` and its stderr to `err` (both
    /// regular files, as restore needs).
    pub fn start(
        exe: &Path,
        mib: u64,
        contents: Contents,
        threads: u32,
        out: &Path,
        err: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Victim> {
        let stdout =
            File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
        let stderr =
            File::create(err).with_context(|| format!("cannot create {}", err.display()))?;
        let mut child = Command::new(exe)
            .arg(mib.to_string())
            .arg(contents.name())
            .arg(threads.to_string())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stdin = child.stdin.take();
        let mut victim = Victim {
            child,
            stdin,
            reaped: false,
            ready: Ready {
                sum: 0,
                check: Duration::ZERO,
            },
        };
        victim.ready = victim.wait_ready(out, err, timeout)?;
        Ok(victim)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its thread count, as the kernel sees it (`Threads:` in `/proc/PID/status`).
    pub fn threads(&self) -> anyhow::Result<u32> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no thread count in {path}"))
    }

    fn wait_ready(&mut self, out: &Path, err: &Path, timeout: Duration) -> anyhow::Result<Ready> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(out)
                .with_context(|| format!("cannot read {}", out.display()))?;
            if text.lines().count() >= 2 && text.ends_with('\n') {
                return parse_ready(&text);
            }
            if let Some(status) = self.child.try_wait().context("waitpid on the victim")? {
                let msg = std::fs::read_to_string(err).unwrap_or_default();
                bail!(
                    "the victim ended before it was ready ({status}): {}",
                    msg.trim()
                );
            }
            if Instant::now() > deadline {
                bail!("the victim was not ready after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The CPU time its threads have used so far (the first field of each thread's
    /// `/proc/PID/task/TID/schedstat`, in ns: the same clock `wait4` reports).
    pub fn cpu_so_far(&self) -> anyhow::Result<Duration> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut ns = 0u64;
        for task in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
            let path = task
                .with_context(|| format!("cannot list {dir}"))?
                .path()
                .join("schedstat");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            ns += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("unexpected {}: {text:?}", path.display()))?;
        }
        Ok(Duration::from_nanos(ns))
    }

    /// Closes its stdin, kills it if it still runs (a checkpoint normally ended it) and reaps it.
    pub fn end(mut self) {
        self.reap();
    }

    /// As `end`, and returns the CPU time it used in its whole life (`wait4`).
    pub fn end_cpu(mut self) -> anyhow::Result<Duration> {
        self.stdin = None;
        // A zombie takes the signal without harm; the pid is ours until we reap it.
        let _ = self.child.kill();
        self.reaped = true;
        crate::sys::wait4_cpu(self.pid()).map(|(_, cpu)| cpu)
    }

    fn reap(&mut self) {
        self.stdin = None;
        if self.reaped {
            return;
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.reap();
    }
}

/// The two lines the victim prints once filled (`ready`, then its `sum=` report).
pub fn parse_ready(text: &str) -> anyhow::Result<Ready> {
    let mut lines = text.lines();
    if lines.next() != Some("ready") {
        bail!("unexpected victim output: {text:?}");
    }
    let report = lines.next().unwrap_or_default();
    let sum = field(report, "sum").and_then(|v| u64::from_str_radix(v, 16).ok());
    let check = field(report, "check_ns")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_nanos);
    match (sum, check) {
        (Some(sum), Some(check)) => Ok(Ready { sum, check }),
        _ => bail!("unexpected victim report: {report:?}"),
    }
}

/// The value of `name=value` in a line of space-separated fields.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| {
        kv.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
    })
}
