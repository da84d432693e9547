//! Pre-copy (issue 13): a job moved from home to an SSH node has its memory sent while it
//! still runs, in rounds, then is frozen and sends only what it wrote since. What must hold:
//! its memory on the node is exactly what it was at home at the freeze, whether it sat idle
//! (the rounds converge) or kept writing all over its memory faster than the link takes it
//! (the rounds stop after a bounded number and the rest goes frozen); `MRUN_TRACE=1` says
//! which; and with `MRUN_PRECOPY=0` nothing is sent ahead. On a kernel without userfaultfd
//! write-protection (before Linux 6.7) every move is a stop-and-copy and the trace says why:
//! then these tests check only that the moves are right.
//!
//! Runs as root (sshd must run as root to log a user in). Build first:
//! `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::ffi::OsStr;

/// A python3 job holding 40 MiB of random bytes that it keeps changing: each step flips
/// `PER_STEP` bytes spread over the whole buffer (so over every page, in time), keeping the
/// sum of all bytes as it goes, then sleeps `PAUSE` seconds (0: never). It prints "READY" once
/// the memory is filled, and when DIR/end appears "SUM ok" if the sum of its bytes is the sum
/// it kept (a page that came back stale after a move would break it), else "SUM bad".
const PYTHON_WRITER: &str = r#"
import os, sys, time
d, per_step, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
n = 40 * 1024 * 1024
data = bytearray(os.urandom(n))
total = sum(data)
print("READY", flush=True)
k = 0
while not os.path.exists(f"{d}/end"):
    for _ in range(per_step):
        k += 1
        p = (k * 7919 * 4096 + k * 13) % n
        old = data[p]
        new = old ^ 0x5a
        data[p] = new
        total += new - old
    if pause:
        time.sleep(pause)
print("SUM", "ok" if sum(data) == total else "bad", k > 0, flush=True)
"#;

fn writer_job(name: &str, per_step: &str, pause: &str, precopy: bool) -> (Finished, String) {
    let sb = Sandbox::new(name);
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built)
        .env("MRUN_TRACE", "1")
        .env("MRUN_PRECOPY", if precopy { "1" } else { "0" });
    let script = OsStr::new(PYTHON_WRITER);
    let dir = sb.dir().as_os_str().to_owned();
    let mut job = m.start(
        name,
        python3(),
        &[
            OsStr::new("-c"),
            script,
            &dir,
            OsStr::new(per_step),
            OsStr::new(pause),
        ],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    m.mrun.migrate_ok(&job, "a");
    // Let it write on the node a while, then bring it back and let it finish there.
    std::thread::sleep(std::time::Duration::from_millis(300));
    m.mrun.migrate_ok(&job, "home");
    write_atomically(&sb.path("end"), "");
    let done = job.finish();
    done.assert_success();
    assert_eq!(
        done.stdout_text(),
        "READY\nSUM ok True\n",
        "{}",
        done.describe()
    );
    let trace = done.stderr_text();
    (done, trace)
}

/// Whether this kernel lets mrun track written pages (else every move is stop-and-copy,
/// and the trace says so).
fn tracking_here(trace: &str) -> bool {
    !trace.contains("pre-copy: off (")
}

/// A job that writes little (a few pages every 20 ms): the rounds converge, and what it
/// wrote during them is in the image.
#[test]
fn an_idle_job_is_sent_ahead_and_its_memory_is_exact() {
    let (done, trace) = writer_job("precopy-idle", "4", "0.02", true);
    if !tracking_here(&trace) {
        eprintln!("no dirty-page tracking on this kernel: {}", done.describe());
        return;
    }
    assert!(
        trace.contains("migrate pre-copy (the job runs on)") && trace.contains("converged"),
        "{}",
        done.describe()
    );
}

/// A job that writes all over its memory without pause: the rounds cannot converge; they stop
/// after a bounded number, saying so, and the rest is sent frozen.
#[test]
fn a_job_that_writes_faster_than_the_link_falls_back_to_stop_and_copy() {
    let (done, trace) = writer_job("precopy-busy", "2000", "0", true);
    if !tracking_here(&trace) {
        eprintln!("no dirty-page tracking on this kernel: {}", done.describe());
        return;
    }
    let rounds = trace
        .lines()
        .filter(|l| l.contains("mrun trace: pre-copy round "))
        .count();
    assert!(
        (1..=mrun_core::engine::precopy::MAX_ROUNDS as usize).contains(&rounds)
            && (trace.contains("does not converge") || trace.contains("rounds,")),
        "{rounds} rounds: {}",
        done.describe()
    );
}

/// `MRUN_PRECOPY=0`: a plain stop-and-copy, nothing sent ahead.
#[test]
fn precopy_can_be_turned_off() {
    let (done, trace) = writer_job("precopy-off", "4", "0.02", false);
    assert!(
        !trace.contains("pre-copy round") && !trace.contains("pre-copy: "),
        "{}",
        done.describe()
    );
}
