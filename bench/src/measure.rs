//! One measurement each: a timed command, a checkpoint plus restore of a fresh victim, and the
//! baseline copy of the same bytes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::buf::PageBuf;
use crate::pattern::Contents;
use crate::scratch::Scratch;
use crate::sys::wait_timeout_cpu;
use crate::victim::{field, Victim};

/// A command that ran to its end.
pub struct Timed {
    /// Wall time from just before spawn to its reaping.
    pub elapsed: Duration,
    pub status: ExitStatus,
    /// CPU time, user + system, of the command and every descendant it waited for.
    pub cpu: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Timed {
    /// The command's failure, in its own words.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        let err = self.stderr.trim();
        let err = if err.is_empty() {
            "(nothing on stderr)"
        } else {
            err
        };
        anyhow::anyhow!("{what} failed ({}): {err}", self.status)
    }
}

/// Runs `cmd` with stdout and stderr on files in `dir` (not pipes: nothing can block on a full
/// pipe, and no reader thread runs while it is timed) and times it. Fails if it does not end
/// within `timeout`.
pub fn run_timed(
    cmd: &mut Command,
    dir: &Scratch,
    tag: &str,
    timeout: Duration,
) -> anyhow::Result<Timed> {
    let (out_path, err_path) = (
        dir.file(&format!("{tag}.out")),
        dir.file(&format!("{tag}.err")),
    );
    let out =
        File::create(&out_path).with_context(|| format!("cannot create {}", out_path.display()))?;
    let err =
        File::create(&err_path).with_context(|| format!("cannot create {}", err_path.display()))?;
    let start = Instant::now();
    let mut child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let Some((status, cpu)) = wait_timeout_cpu(&mut child, timeout)? else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not end within {timeout:?}; killed");
    };
    let elapsed = start.elapsed();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(Timed {
        elapsed,
        status,
        cpu,
        stdout,
        stderr,
    })
}

/// What one checkpoint and restore of a victim took.
#[derive(Debug, Clone)]
pub struct Sample {
    pub checkpoint: Duration,
    /// CPU time, user + system, of the checkpoint: the checkpointing command and what it waited
    /// for, plus what the victim itself used from just before the checkpoint to its end (CRIU's
    /// parasite code runs inside the victim; both engines end the victim, whose exit frees its
    /// memory).
    pub checkpoint_cpu: Duration,
    pub image_bytes: u64,
    /// `mrunctl restore` from spawn to its exit, including the victim's verification and exit.
    pub restore_raw: Duration,
    /// CPU time, user + system, of the restoring command and every process it waited for (the
    /// restored victim), less the CPU time of the victim's own verification (`verify_cpu`).
    pub restore_cpu: Duration,
    /// The main thread's CPU time over the restored victim's verification, reported by itself.
    pub verify_cpu: Duration,
    /// The restored victim's checksum pass, munmap, and waking and joining its other threads
    /// (none with one thread), timed by itself.
    pub verify: Duration,
    /// The checksum pass alone, of `verify`.
    pub verify_check: Duration,
    /// Waking and joining the other threads, of `verify`.
    pub verify_join: Duration,
    /// The original victim's checksum pass (for comparison with `verify`).
    pub original_check: Duration,
    /// The stages `mrunctl checkpoint` reported with `MRUN_TRACE=1`, in its order.
    pub checkpoint_stages: Vec<(String, Duration)>,
    /// The same for `mrunctl restore`.
    pub restore_stages: Vec<(String, Duration)>,
}

pub struct Setup<'a> {
    pub mrunctl: &'a Path,
    pub victim: &'a Path,
    pub dir: &'a Scratch,
}

/// What checkpoints and restores the victim.
#[derive(Debug, Clone, Copy)]
pub enum Engine<'a> {
    /// `mrunctl checkpoint PID -o IMAGE`, `mrunctl restore IMAGE` (with `MRUN_TRACE=1`).
    Mrun,
    /// `criu dump -t PID -D DIR --shell-job`, `criu restore -D DIR --shell-job`, this criu.
    Criu(&'a Path),
}

impl Engine<'_> {
    fn name(&self) -> &'static str {
        match self {
            Engine::Mrun => "mrunctl",
            Engine::Criu(_) => "criu",
        }
    }
}

/// How long any one step with `mib` MiB may take before the bench gives up on it.
fn timeout(mib: u64) -> Duration {
    Duration::from_secs(30 + 30 * mib.div_ceil(1024))
}

/// Starts a victim with `threads` threads, checkpoints it with `engine`, restores the image
/// and checks that the restored victim found its memory intact and every thread still itself.
/// `expected_sum` is the checksum of the baseline's bytes. mrunctl runs with `MRUN_TRACE=1` (a
/// few lines on its stderr), so that the sample also holds its stage times.
pub fn checkpoint_restore(
    s: &Setup,
    engine: Engine,
    mib: u64,
    contents: Contents,
    threads: u32,
    expected_sum: u64,
) -> anyhow::Result<Sample> {
    let image = s.dir.file(match engine {
        Engine::Mrun => "image",
        Engine::Criu(_) => "criu-images",
    });
    let timeout = timeout(mib);
    // Regular files: restore reopens them by path, so the restored victim reports into them too.
    let (out, err) = (s.dir.file("victim.out"), s.dir.file("victim.err"));
    let victim = Victim::start(s.victim, mib, contents, threads, &out, &err, timeout)?;
    if victim.ready.sum != expected_sum {
        bail!(
            "the victim's checksum {:016x} differs from the baseline's {expected_sum:016x}: \
               victim.c and pattern.rs disagree",
            victim.ready.sum
        );
    }
    let original_check = victim.ready.check;
    let live = victim.threads()?;
    if live != threads {
        bail!("the victim runs {live} threads, not the {threads} it was started with");
    }

    let mut cmd = match engine {
        Engine::Mrun => {
            let mut cmd = Command::new(s.mrunctl);
            cmd.arg("checkpoint")
                .arg(victim.pid().to_string())
                .arg("-o")
                .arg(&image)
                .env("MRUN_TRACE", "1");
            cmd
        }
        Engine::Criu(criu) => {
            fresh_dir(&image)?;
            let mut cmd = Command::new(criu);
            cmd.arg("dump")
                .arg("-t")
                .arg(victim.pid().to_string())
                .arg("-D")
                .arg(&image)
                .args(["--shell-job", "-o", "dump.log"]);
            cmd
        }
    };
    cmd.stdin(Stdio::null());
    let victim_before = victim.cpu_so_far()?;
    let ckpt = run_timed(&mut cmd, s.dir, "checkpoint", timeout);
    let victim_cpu = victim.end_cpu();
    let mut ckpt = ckpt?;
    let checkpoint_cpu = ckpt.cpu + victim_cpu?.saturating_sub(victim_before);
    let checkpoint_stages = take_trace(&mut ckpt.stderr, "checkpoint");
    if !ckpt.status.success() {
        let e = ckpt.failure(&format!("{} checkpoint", engine.name()));
        return Err(with_criu_log(e, engine, &image, "dump.log"));
    }
    let image_bytes = image_size(engine, &image)?;

    let mut cmd = match engine {
        Engine::Mrun => {
            let mut cmd = Command::new(s.mrunctl);
            cmd.arg("restore").arg(&image).env("MRUN_TRACE", "1");
            cmd
        }
        Engine::Criu(criu) => {
            let mut cmd = Command::new(criu);
            cmd.arg("restore")
                .arg("-D")
                .arg(&image)
                .args(["--shell-job", "-o", "restore.log"]);
            cmd
        }
    };
    cmd.stdin(Stdio::null());
    let rst = run_timed(&mut cmd, s.dir, "restore", timeout);
    let log_tail = criu_log_tail(engine, &image, "restore.log");
    let _ = match engine {
        Engine::Mrun => std::fs::remove_file(&image),
        Engine::Criu(_) => std::fs::remove_dir_all(&image),
    };
    let mut rst = rst?;
    let restore_stages = take_trace(&mut rst.stderr, "restore");
    let said = std::fs::read_to_string(&out).unwrap_or_default();
    let line = said
        .lines()
        .find(|l| l.starts_with("verified="))
        .unwrap_or_default();
    let failed = |mut e: anyhow::Error| {
        let victim_err = std::fs::read_to_string(&err).unwrap_or_default();
        if !line.is_empty() || !victim_err.trim().is_empty() {
            e = e.context(format!(
                "the restored victim said: {line} {}",
                victim_err.trim()
            ));
        }
        if !log_tail.is_empty() {
            e = e.context(format!("restore.log: {log_tail}"));
        }
        e
    };
    if !rst.status.success() {
        return Err(failed(rst.failure(&format!("{} restore", engine.name()))));
    }
    let ns = |name| field(line, name).and_then(|v| v.parse::<u64>().ok());
    let (Some("ok"), Some(check), Some(unmap), Some(verify_cpu)) = (
        field(line, "verified"),
        ns("check_ns"),
        ns("unmap_ns"),
        ns("cpu_ns"),
    ) else {
        return Err(failed(anyhow::anyhow!(
            "{} restore exited 0 but the victim did not report a verified memory in {}: {said:?}",
            engine.name(),
            out.display()
        )));
    };
    // The victim already counts a thread that failed its check as a failure; this catches a
    // victim that does not know how many threads it should have.
    let (Some(n), Some(n_ok), Some(join)) = (ns("threads"), ns("threads_ok"), ns("join_ns")) else {
        bail!(
            "the restored victim did not report its threads in {}: {said:?}",
            out.display()
        );
    };
    if n != u64::from(threads) || n_ok != n {
        bail!(
            "the restored victim had {n_ok} of {n} threads intact; it was started with {threads}"
        );
    }
    let verify_cpu = Duration::from_nanos(verify_cpu);
    Ok(Sample {
        checkpoint: ckpt.elapsed,
        checkpoint_cpu,
        image_bytes,
        restore_raw: rst.elapsed,
        restore_cpu: rst.cpu.saturating_sub(verify_cpu),
        verify_cpu,
        verify: Duration::from_nanos(check + unmap + join),
        verify_check: Duration::from_nanos(check),
        verify_join: Duration::from_nanos(join),
        original_check,
        checkpoint_stages,
        restore_stages,
    })
}

/// An empty directory at `path` (CRIU's image directory; a leftover of a failed run goes).
fn fresh_dir(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    std::fs::create_dir(path).with_context(|| format!("cannot create {}", path.display()))
}

/// mrun's image file, or the `.img` files of CRIU's image directory (not its logs), in bytes.
fn image_size(engine: Engine, image: &Path) -> anyhow::Result<u64> {
    if let Engine::Mrun = engine {
        return Ok(std::fs::metadata(image)
            .with_context(|| format!("no image at {}", image.display()))?
            .len());
    }
    let mut total = 0;
    for entry in
        std::fs::read_dir(image).with_context(|| format!("cannot list {}", image.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", image.display()))?;
        if entry.file_name().to_string_lossy().ends_with(".img") {
            total += entry.metadata().context("stat of an image file")?.len();
        }
    }
    if total == 0 {
        bail!("criu dump left no image in {}", image.display());
    }
    Ok(total)
}

/// CRIU's own words on a failure: the `Error` lines of its log (the last 5), or its last 3 lines.
fn criu_log_tail(engine: Engine, dir: &Path, log: &str) -> String {
    if let Engine::Mrun = engine {
        return String::new();
    }
    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        // Printed on every run here, and harmless: criu cannot raise its own fd limit.
        .filter(|l| l.starts_with("Error") && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let pick = if errors.is_empty() {
        &lines[lines.len().saturating_sub(3)..]
    } else {
        &errors[errors.len().saturating_sub(5)..]
    };
    pick.join(" | ")
}

fn with_criu_log(e: anyhow::Error, engine: Engine, dir: &Path, log: &str) -> anyhow::Error {
    let tail = criu_log_tail(engine, dir, log);
    if tail.is_empty() {
        e
    } else {
        e.context(format!("{log}: {tail}"))
    }
}

/// Removes the `mrun trace: WHAT STAGE: N ms [(K stops)]` lines from `stderr` (so that an error message
/// shows only the error) and returns their stages and times, in order.
pub fn take_trace(stderr: &mut String, what: &str) -> Vec<(String, Duration)> {
    let mut stages = Vec::new();
    let mut rest = String::new();
    for line in stderr.lines() {
        let stage = line
            .strip_prefix("mrun trace: ")
            .and_then(|l| l.strip_prefix(what))
            .and_then(|l| l.strip_prefix(' '))
            .and_then(|l| l.rsplit_once(": "))
            .and_then(|(stage, t)| {
                let ms: f64 = t.split_once(" ms")?.0.parse().ok()?;
                Some((
                    stage.to_string(),
                    Duration::from_secs_f64(ms.max(0.0) / 1e3),
                ))
            });
        match stage {
            Some(st) => stages.push(st),
            None => {
                rest.push_str(line);
                rest.push('\n');
            }
        }
    }
    *stderr = rest;
    stages
}

/// The baseline: `bytes` written raw to a file (no fsync) and read back into fresh,
/// page-aligned memory.
#[derive(Debug, Clone, Copy)]
pub struct CopyTimes {
    pub out: Duration,
    pub back: Duration,
}

pub fn copy(bytes: &[u8], path: &Path) -> anyhow::Result<CopyTimes> {
    let start = Instant::now();
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(f);
    let out = start.elapsed();

    let start = Instant::now();
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut back = PageBuf::zeroed(bytes.len());
    f.read_exact(back.as_mut_slice())
        .with_context(|| format!("cannot read {}", path.display()))?;
    let back_time = start.elapsed();

    drop(back);
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(CopyTimes {
        out,
        back: back_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_log_tail_keeps_the_errors_that_matter() {
        let dir = std::env::temp_dir().join(format!("mrun-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the test directory");
        let criu = Engine::Criu(Path::new("criu"));
        std::fs::write(
            dir.join("restore.log"),
            "Warn (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\n\
             Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self\n\
             Error (criu/files-reg.c:2110): Can't open file tmp/x on restore: No such file\n\
             Error (criu/cr-restore.c:2350): Restoring FAILED.\n",
        )
        .expect("write restore.log");
        assert_eq!(
            criu_log_tail(criu, &dir, "restore.log"),
            "Error (criu/files-reg.c:2110): Can't open file tmp/x on restore: No such file | \
             Error (criu/cr-restore.c:2350): Restoring FAILED."
        );
        // No error line: the last lines say what happened.
        std::fs::write(dir.join("dump.log"), "a\nb\nc\nd\n").expect("write dump.log");
        assert_eq!(criu_log_tail(criu, &dir, "dump.log"), "b | c | d");
        assert_eq!(criu_log_tail(Engine::Mrun, &dir, "dump.log"), "");
        std::fs::remove_dir_all(&dir).expect("remove the test directory");
    }

    #[test]
    fn take_trace_keeps_the_error_and_returns_the_stages() {
        let mut stderr = "mrun trace: checkpoint freeze: 53.5 ms\n\
                          mrunctl: something went wrong\n\
                          mrun trace: checkpoint state: 0.4 ms\n\
                          mrun trace: restore Header: 1.0 ms\n"
            .to_string();
        let stages = take_trace(&mut stderr, "checkpoint");
        let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["freeze", "state"]);
        assert_eq!(stages[1].1, Duration::from_micros(400));
        assert_eq!(
            stderr,
            "mrunctl: something went wrong\nmrun trace: restore Header: 1.0 ms\n"
        );
    }
}
