//! The shapes most tests share: a program checkpointed mid-run and restored (possibly several
//! times in a row) must produce exactly the output of an uninterrupted run; a state victim
//! checkpointed after "READY" must report PASS after the restore.

use super::process::{assert_same_bytes, Finished, Input, Output, Proc, TIMEOUT};
use super::procfs::{
    descendants, fd_offset, find_restored, status_field, thread_count, wait_until,
    wait_until_sleeping,
};
use super::sandbox::Sandbox;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

/// What "mid-run" means before each checkpoint.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// New output appeared since the previous checkpoint (or since the start).
    OutputGrows,
    /// The program has read its way through part of its input on fd 0 (for programs, like
    /// sort, that write nothing before they have read everything).
    InputRead,
    /// Part of the input on fd 0 is read, as for `InputRead`, and the program runs more than
    /// one thread at that moment (for programs, like sort, that start their threads only for
    /// a phase of the work).
    ThreadsRunning,
    /// The process of the job (the root or a descendant) with this name has read part of the
    /// input on its fd 0 (for a job that is a tree, such as a pipeline run by `sh`).
    MemberInputRead(&'static str),
}

fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// How much output must exist before checkpoint `hop` of `hops`: spread over the run
/// (1/(hops+2), 2/(hops+2)...) so that every hop is mid-run with work left.
fn mid_run_target(total: usize, hop: usize, hops: usize) -> usize {
    total * hop / (hops + 2)
}

/// The pid to checkpoint at a hop: the original, or what the previous restore brought back.
fn pid_at_hop(current: &Proc, hop: usize, original_pid: i32) -> i32 {
    if hop == 1 {
        original_pid
    } else {
        find_restored(current.pid(), original_pid)
    }
}

/// The process named `name` among `root` and its descendants.
pub fn member_named(root: i32, name: &str, label: &str) -> i32 {
    let mut found = None;
    let ok = wait_until(TIMEOUT, || {
        let mut all = vec![root];
        all.extend(descendants(root));
        found = all
            .into_iter()
            .find(|p| status_field(*p, "Name").as_deref() == Some(name));
        found.is_some()
    });
    assert!(
        ok,
        "{label}: no process named {name} in the job of pid {root}"
    );
    found.unwrap_or_default()
}

fn wait_input_read(pid: i32, label: &str, target: u64) {
    let ok = wait_until(TIMEOUT, || fd_offset(pid, 0).unwrap_or(0) > target);
    assert!(
        ok,
        "{label} (pid {pid}) never read more than {target} bytes of its input"
    );
}

/// Waits until `pid` has read more than `target` bytes of its fd 0 and runs 2 threads or more.
pub fn wait_threads_running(pid: i32, label: &str, target: u64) {
    let ok = wait_until(TIMEOUT, || {
        fd_offset(pid, 0).unwrap_or(0) > target && thread_count(pid) >= 2
    });
    assert!(
        ok,
        "{label} (pid {pid}) never ran several threads after reading {target} bytes of its \
         input (offset {:?}, {} threads)",
        fd_offset(pid, 0),
        thread_count(pid)
    );
}

/// The process that held the checkpointed program (the original, or an earlier
/// `mrunctl restore`) ends once the image is complete: the program was SIGKILLed, so it dies of
/// SIGKILL too.
fn assert_ended_by_checkpoint(done: &Finished, hop: usize) {
    assert!(
        done.status.signal() == Some(libc::SIGKILL),
        "after checkpoint {hop}, expected the checkpointed holder to die of SIGKILL: {}",
        done.describe()
    );
}

/// Runs `sh -c SCRIPT sh INPUT OUT` (SCRIPT `exec`s the program, reading "$1" and writing to
/// "$2", e.g. `exec gzip -9 < "$1" > "$2"`), once uninterrupted and once checkpointed and
/// restored `hops` times in a row (each hop after more progress), then asserts both output
/// files are byte-identical. The output file is one the process had open, so each restore
/// reopens it by path at the same offset.
pub fn migrate_file_output(
    sb: &Sandbox,
    label: &str,
    script: &str,
    input: &Path,
    hops: usize,
    progress: Progress,
) {
    let input = sb.input(input);
    let reference = sb.output_file("reference.out");
    let args = |out: &Path| -> Vec<OsString> {
        vec![
            "-c".into(),
            script.into(),
            "sh".into(),
            input.clone().into(),
            out.into(),
        ]
    };
    sb.run(
        &format!("{label} (uninterrupted)"),
        "sh",
        &args(&reference),
        Input::Null,
    )
    .assert_success();
    let want = read(&reference);

    let out = sb.output_file("migrated.out");
    let mrunctl = sb.mrunctl();
    let mut current = sb.spawn(label, "sh", &args(&out), Input::Null, Output::Pipe);
    let original_pid = current.pid();
    let mut last_len = 0;
    for hop in 1..=hops {
        let pid = pid_at_hop(&current, hop, original_pid);
        match progress {
            Progress::OutputGrows => {
                let target = last_len.max(mid_run_target(want.len(), hop, hops));
                let ok = wait_until(TIMEOUT, || file_len(&out) > target);
                assert!(
                    ok,
                    "{label}: output stuck at {} bytes before checkpoint {hop}",
                    file_len(&out)
                );
            }
            Progress::InputRead => {
                let input_len = file_len(&input);
                wait_input_read(pid, label, mid_run_target(input_len, hop, hops) as u64);
            }
            Progress::ThreadsRunning => {
                let target = mid_run_target(file_len(&input), hop, hops) as u64;
                wait_threads_running(pid, label, target);
            }
            Progress::MemberInputRead(name) => {
                let target = mid_run_target(file_len(&input), hop, hops) as u64;
                let reader = member_named(pid, name, label);
                wait_input_read(reader, label, target);
            }
        }
        let image = sb.path(&format!("hop{hop}.img"));
        mrunctl.checkpoint_ok(pid, &image);
        let done = current.finish();
        assert_ended_by_checkpoint(&done, hop);
        last_len = file_len(&out);
        eprintln!(
            "{label}: checkpoint {hop} at {last_len} of {} output bytes",
            want.len()
        );
        assert!(
            last_len < want.len(),
            "{label}: checkpoint {hop} came too late: the output is already complete \
             ({last_len} bytes); nothing was tested"
        );
        current = mrunctl.restore(&image, Input::Null, Output::Pipe);
    }
    let last = current.finish();
    last.assert_success();
    assert!(
        last.stdout.is_empty(),
        "{label}: unexpected output on the pipe: {}",
        last.describe()
    );
    assert_same_bytes(label, &read(&out), &want);
}

/// Runs `program args...` with stdout piped to the test, once uninterrupted and once
/// checkpointed and restored `hops` times in a row; the bytes read from the original's pipe
/// (until it closes when the original is killed) followed by each restore's stdout must equal
/// the uninterrupted output.
pub fn migrate_pipe_output<S: AsRef<OsStr>>(
    sb: &Sandbox,
    label: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    envs: &[(&str, &str)],
    hops: usize,
) {
    let program = program.as_ref();
    let spawn = |stage: &str| {
        let mut cmd = sb.command(program);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(format!("{label} ({stage})"), cmd, Input::Null, Output::Pipe)
    };
    let reference = spawn("uninterrupted").finish();
    reference.assert_success();
    let want = reference.stdout;

    let mrunctl = sb.mrunctl();
    let mut current = spawn("original");
    let original_pid = current.pid();
    let mut got = Vec::new();
    for hop in 1..=hops {
        let pid = pid_at_hop(&current, hop, original_pid);
        let target = mid_run_target(want.len(), hop, hops);
        current.wait_for_stdout_len(target.saturating_sub(got.len()).max(1));
        let image = sb.path(&format!("hop{hop}.img"));
        mrunctl.checkpoint_ok(pid, &image);
        let done = current.finish();
        assert_ended_by_checkpoint(&done, hop);
        got.extend_from_slice(&done.stdout);
        eprintln!(
            "{label}: checkpoint {hop} at {} of {} output bytes",
            got.len(),
            want.len()
        );
        assert!(
            got.len() < want.len(),
            "{label}: checkpoint {hop} came too late: all {} bytes were already out; nothing was \
             tested",
            got.len()
        );
        current = mrunctl.restore(&image, Input::Null, Output::Pipe);
    }
    let last = current.finish();
    last.assert_success();
    got.extend_from_slice(&last.stdout);
    assert_same_bytes(label, &got, &want);
}

/// What happened to a state victim: its output before the checkpoint and the restore's result.
pub struct StateRun {
    pub pid: i32,
    pub original: Finished,
    pub restored: Finished,
}

impl StateRun {
    /// The restore exited 0 and the victim printed "ALL PASS" and no FAIL line.
    pub fn assert_all_pass(&self) -> &Self {
        assert_victim_passed(&self.restored, "the restored victim");
        self
    }
}

/// `done` (a victim, or the restore that ran it) exited 0 and printed "ALL PASS" and no FAIL
/// line.
pub fn assert_victim_passed(done: &Finished, what: &str) {
    let text = done.stdout_text();
    assert!(
        done.status.success() && text.contains("ALL PASS") && !text.contains("FAIL"),
        "{what} did not pass: {}",
        done.describe()
    );
}

/// Starts victim `name` with `GO_FILE extra...` (the sandbox's file "go") and waits for
/// "READY".
fn start_state_victim(sb: &Sandbox, name: &str, extra: &[&OsStr]) -> Proc {
    let go = sb.path("go");
    let mut args: Vec<&OsStr> = vec![go.as_os_str()];
    args.extend_from_slice(extra);
    let mut victim = sb.spawn_victim(name, &args, Input::Null);
    victim.wait_for_stdout("READY\n");
    victim
}

/// Starts victim `name` with `GO_FILE extra...`, waits for "READY" (and, if `sleeping`, for it
/// to block in the kernel), checkpoints it, checks the original was killed before running any
/// check, creates the go file and restores it to the end.
pub fn run_state_victim(sb: &Sandbox, name: &str, extra: &[&OsStr], sleeping: bool) -> StateRun {
    run_state_victim_then(sb, name, extra, sleeping, |_| {})
}

/// [`run_state_victim`], calling `between` with the victim's pid after the checkpoint, before
/// the restore (to change the world the image comes back to).
pub fn run_state_victim_then(
    sb: &Sandbox,
    name: &str,
    extra: &[&OsStr],
    sleeping: bool,
    between: impl FnOnce(i32),
) -> StateRun {
    let victim = start_state_victim(sb, name, extra);
    let pid = victim.pid();
    if sleeping {
        wait_until_sleeping(pid);
    }
    let image = sb.path(&format!("{name}.img"));
    sb.mrunctl().checkpoint_ok(pid, &image);
    let original = victim.finish();
    assert_ended_by_checkpoint(&original, 1);
    let before = original.stdout_text();
    assert!(
        !before.contains("PASS") && !before.contains("FAIL"),
        "{name} ran its checks before the checkpoint: {}",
        original.describe()
    );
    between(pid);
    sb.touch("go");
    let restored = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    StateRun {
        pid,
        original,
        restored,
    }
}

/// Starts victim `name` with `GO_FILE extra...`, waits for "READY", then checkpoints and
/// restores it `hops` times in a row (each hop from the process the previous restore brought
/// back), creates the go file and lets the last restore run to the end. Returns the original
/// pid and how the last restore ended.
pub fn run_state_victim_hops(
    sb: &Sandbox,
    name: &str,
    extra: &[&OsStr],
    hops: usize,
) -> (i32, Finished) {
    let mut current = start_state_victim(sb, name, extra);
    let original_pid = current.pid();
    let mrunctl = sb.mrunctl();
    for hop in 1..=hops {
        let pid = pid_at_hop(&current, hop, original_pid);
        if hop > 1 {
            assert_ne!(
                pid, original_pid,
                "hop {hop}: the restored process has no outer pid of its own"
            );
        }
        let image = sb.path(&format!("hop{hop}.img"));
        mrunctl.checkpoint_ok(pid, &image);
        let done = current.finish();
        assert_ended_by_checkpoint(&done, hop);
        current = mrunctl.restore(&image, Input::Null, Output::Pipe);
    }
    sb.touch("go");
    (original_pid, current.finish())
}

/// Control: victim `name` (with `GO_FILE arg`) passes when never checkpointed, so a failure
/// after a restore is the restore's doing.
pub fn assert_passes_unrestored(sb: &Sandbox, name: &str, arg: &str) {
    let go = sb.touch("go-control");
    let done = sb
        .spawn_victim(name, &[go.as_os_str(), arg.as_ref()], Input::Null)
        .finish();
    assert_victim_passed(&done, &format!("victim {name} without any checkpoint"));
}

/// Whether this kernel has guard regions (MADV_GUARD_INSTALL, Linux 6.13+), asked of the
/// `guard_install` victim, which must also pass when never checkpointed.
pub fn guard_regions_supported(sb: &Sandbox) -> bool {
    let go = sb.touch("go-control");
    let done = sb
        .spawn_victim("guard_install", &[go.as_os_str()], Input::Null)
        .finish();
    if done.stdout_text().contains("UNSUPPORTED") {
        return false;
    }
    assert_victim_passed(&done, "victim guard_install without any checkpoint");
    true
}

/// A python3 job holding 40 MiB of random bytes that it keeps changing (argv: DIR, PER_STEP,
/// PAUSE): each step flips PER_STEP bytes spread over the whole buffer (so over every page, in
/// time), keeping the sum of all bytes as it goes, then sleeps PAUSE seconds (0: never). It
/// prints "READY" once the memory is filled, and when DIR/end appears "SUM ok True" (or "SUM
/// bad": a page came back stale after a move or restore), then "SAME exe uid caps" if its
/// `/proc/self/exe`, uid and effective capabilities are what they were at its start (else
/// what differs).
pub const MEMORY_WRITER_PY: &str = r#"
import os, sys, time
d, per_step, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def status(key):
    return next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key + ":"))
start = (os.readlink("/proc/self/exe"), os.getuid(), status("CapEff"))
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
now = (os.readlink("/proc/self/exe"), os.getuid(), status("CapEff"))
print("SAME exe uid caps" if now == start else f"DIFFERENT {start} {now}", flush=True)
"#;

/// `mrunctl checkpoint --pre-copy` of a running job, then `mrunctl restore`: the rounds write
/// its memory while it runs, the freeze only what changed; the restore forks the process with
/// the pages sent ahead already in place (no exec). Its memory, executable, uid and
/// capabilities must be as they were. Where the kernel cannot track written pages, a plain
/// checkpoint (the trace says so) and only the memory is checked.
pub fn precopied_checkpoint_restores_in_place(sb: &Sandbox, label: &str) {
    let dir = sb.dir().as_os_str().to_owned();
    let mut cmd = sb.command(super::reference::python3());
    cmd.arg("-c")
        .arg(MEMORY_WRITER_PY)
        .arg(&dir)
        .args(["4", "0.02"]);
    let mut job = Proc::spawn(
        format!("{label} (original)"),
        cmd,
        Input::Null,
        Output::Pipe,
    );
    job.wait_for_stdout("READY\n");
    let image = sb.path("precopied.img");
    let mrunctl = sb.mrunctl();
    let checkpoint = mrunctl.checkpoint_with(
        job.pid(),
        image.as_os_str(),
        &["--pre-copy"],
        &[("MRUN_TRACE", "1")],
    );
    checkpoint.assert_success();
    let trace = checkpoint.stderr_text();
    let tracked = !trace.contains("pre-copy: off (");
    assert!(
        !tracked || trace.contains("pre-copy round 1"),
        "{label}: no pre-copy round: {}",
        checkpoint.describe()
    );
    job.finish();
    let restored =
        mrunctl.restore_with_env(&image, &[("MRUN_TRACE", "1")], Input::Null, Output::Pipe);
    // Let it run a while restored, writing on.
    std::thread::sleep(std::time::Duration::from_millis(300));
    sb.touch("end");
    let done = restored.finish();
    done.assert_success();
    assert_eq!(
        done.stdout_text(),
        "SUM ok True\nSAME exe uid caps\n",
        "{label}: {}",
        done.describe()
    );
    if tracked {
        let held = done
            .stderr_text()
            .lines()
            .find_map(|l| {
                let counts = l.split_once("restore Precopied (")?.1;
                counts
                    .split_once(" held in place")?
                    .0
                    .split_once(", ")?
                    .1
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
        assert!(
            held > 0,
            "{label}: no page held in place: {}",
            done.describe()
        );
    }
}
