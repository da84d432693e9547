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

fn writer_job(name: &str, per_step: &str, pause: &str, precopy: bool) -> (Finished, String) {
    let sb = Sandbox::new(name);
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built)
        .env("MRUN_TRACE", "1")
        .env("MRUN_PRECOPY", if precopy { "1" } else { "0" });
    let script = OsStr::new(MEMORY_WRITER_PY);
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
        "READY\nSUM ok True\nSAME exe uid caps\n",
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

/// A python3 job holding 40 MiB of random bytes in a private anonymous mapping, which gives
/// one page after another back to the kernel (`MADV_DONTNEED`, so it reads zero) every 2 ms
/// while it is moved: pages sent ahead and freed before the freeze must come back zero, the
/// others as they were. Prints "READY", then, when DIR/end appears, "FREED ok" or "FREED bad"
/// and "KEPT ok" or "KEPT bad".
const PYTHON_FREER: &str = r#"
import mmap, os, sys, time, hashlib
d = sys.argv[1]
n = 40 * 1024 * 1024
page = 4096
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.write(os.urandom(n))
sums = [hashlib.md5(m[i:i + page]).digest() for i in range(0, n, page)]
print("READY", flush=True)
freed = []
k = 0
while not os.path.exists(f"{d}/end"):
    p = (k * 7919) % (n // page)
    k += 1
    m.madvise(mmap.MADV_DONTNEED, p * page, page)
    freed.append(p)
    time.sleep(0.002)
zero = bytes(page)
gone = set(freed)
print("FREED", "ok" if all(m[p * page:(p + 1) * page] == zero for p in gone) else "bad", flush=True)
kept = all(hashlib.md5(m[i * page:(i + 1) * page]).digest() == sums[i]
           for i in range(n // page) if i not in gone)
print("KEPT", "ok" if kept else "bad", len(gone) > 0, flush=True)
"#;

/// Pages the job gives back to the kernel after they were sent ahead read zero on the node
/// (the node holds what was sent at the pages' own addresses, and the new process is forked
/// with them in place: one the image no longer names must not keep its old bytes).
#[test]
fn pages_freed_after_they_were_sent_read_zero_on_the_node() {
    let name = "precopy-freed";
    let sb = Sandbox::new(name);
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    // The node's restore helper traces too (its lines reach the job's stderr).
    let traced_agent = format!("MRUN_TRACE=1 {}", agent_path().display());
    let m = SshMrun::new(&sb, &client, RemoteAgent::Command(traced_agent)).env("MRUN_TRACE", "1");
    let dir = sb.dir().as_os_str().to_owned();
    let mut job = m.start(
        name,
        python3(),
        &[OsStr::new("-c"), OsStr::new(PYTHON_FREER), &dir],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    m.mrun.migrate_ok(&job, "a");
    std::thread::sleep(std::time::Duration::from_millis(100));
    write_atomically(&sb.path("end"), "");
    let done = job.finish();
    done.assert_success();
    assert_eq!(
        done.stdout_text(),
        "READY\nFREED ok\nKEPT ok True\n",
        "{}",
        done.describe()
    );
    let trace = done.stderr_text();
    if !tracking_here(&trace) {
        eprintln!("no dirty-page tracking on this kernel: {}", done.describe());
        return;
    }
    let held = trace
        .lines()
        .find_map(|l| {
            l.split_once("restore Precopied (")?
                .1
                .split_once(" held in place")?
                .0
                .split_once(", ")
        })
        .and_then(|(_, held)| held.parse::<u64>().ok());
    assert!(
        held.is_some_and(|h| h > 0),
        "the node held no page sent ahead in place: {}",
        done.describe()
    );
}

/// `mrunctl checkpoint --pre-copy` to a file, then `mrunctl restore` (as root).
#[test]
fn a_precopied_checkpoint_restores_with_its_pages_in_place() {
    let sb = Sandbox::new("precopy-checkpoint");
    precopied_checkpoint_restores_in_place(&sb, "pre-copied checkpoint");
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
