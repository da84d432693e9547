//! Jobs started with `mrun COMMAND` and moved with `mrunctl migrate JOB local|home` while they
//! run, all through the real binaries (`mrun`, `mrun-agent` beside it, `mrunctl`): the node
//! `local` is an `mrun-agent` on this machine, so a "move" is a checkpoint at one end and a
//! restore at the other with the job's stdio relayed through `mrun` while it is away.
//!
//! What must hold: the output is byte-identical to an uninterrupted run, stdin reaches the job
//! wherever it is, signals sent to `mrun` reach the job, `mrun` ends exactly as the job ends,
//! the job keeps its pid, refusals and bad requests leave the job at home untouched, and another
//! user cannot move someone's job.
//!
//! Build the binaries first: `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Starts `mrun PROGRAM ARGS...` with stdout to `sink`, moves it to each of `nodes` in turn,
/// each time once its output has passed the next fraction of `want` (1/(n+2), 2/(n+2)...) and
/// grown since the previous move, then asserts it ends with exit 0 and exactly `want` as output.
fn output_across_hops(
    mrun: &Mrun,
    label: &str,
    program: &str,
    args: &[&OsStr],
    want: &[u8],
    sink: Sink,
    nodes: &[&str],
) {
    let sb = mrun.sandbox();
    let out_path = sb.output_file("job.out");
    let stdout = match sink {
        Sink::File => Output::File(out_path.clone()),
        Sink::Pipe => Output::Pipe,
    };
    let job = mrun.start(label, program, args, &[], Input::Null, stdout);
    // mrun made its socket directory private to its user, and the job runs as that user.
    assert_private_dir(&mrun.socket_dir(), mrun.uid());
    assert_eq!(
        status_field(job.id as i32, "Uid")
            .and_then(|u| u.split_whitespace().next().map(str::to_string)),
        Some(mrun.uid().to_string()),
        "{label}: the job does not run as uid {}",
        mrun.uid()
    );
    let len = |job: &Job| match sink {
        Sink::File => file_len(&out_path),
        Sink::Pipe => job.mrun.stdout_len(),
    };
    let mut last = 0;
    for (i, node) in nodes.iter().enumerate() {
        let target = (want.len() * (i + 1) / (nodes.len() + 2)).max(last);
        let grew = wait_until(TIMEOUT, || len(&job) > target);
        assert!(
            grew,
            "{label}: output stuck at {} of {} bytes before the move to {node}; mrun's stderr: {}",
            len(&job),
            want.len(),
            job.mrun.stderr_text()
        );
        mrun.migrate_ok(&job, node);
        last = len(&job);
        eprintln!(
            "{label}: moved to {node} at {last} of {} output bytes",
            want.len()
        );
    }
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stderr.is_empty(),
        "{label}: mrun printed on stderr: {}",
        done.describe()
    );
    let got = match sink {
        Sink::File => {
            assert!(
                done.stdout.is_empty(),
                "{label}: output on mrun's stdout pipe: {}",
                done.describe()
            );
            read(&out_path)
        }
        Sink::Pipe => done.stdout,
    };
    assert_same_bytes(label, &got, want);
}

/// Starts the `hopper` victim under mrun (see tests/victims/hopper.c) with its control files in
/// the sandbox, and waits until it is READY.
fn start_hopper(mrun: &Mrun, mode: &str) -> Job {
    let sb = mrun.sandbox();
    let victim = sb.victim("hopper");
    let mut job = mrun.start(
        &format!("hopper {mode}"),
        &victim,
        &[sb.dir().as_os_str(), OsStr::new(mode)],
        &[],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    let want = format!("PID {}\n", job.id);
    assert!(
        job.mrun.stdout_text().starts_with(&want),
        "hopper does not report its job id as its pid: {}",
        job.mrun.stdout_text()
    );
    job
}

/// The blocked-signal mask of `pid` (`SigBlk` in /proc/PID/status).
fn blocked_signals(pid: i32) -> u64 {
    status_field(pid, "SigBlk")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or_else(|| panic!("no SigBlk for pid {pid}"))
}

/// The hopper blocks no signal, wherever it runs: a mask it did not set (e.g. inherited from
/// mrun, which blocks the signals it passes on) would keep every signal from reaching it.
fn assert_nothing_blocked(job: &Job, when: &str) {
    let (pid, place) = job.locate();
    let mask = blocked_signals(pid);
    let names: Vec<String> = (1..=64)
        .filter(|s| mask & (1u64 << (s - 1)) != 0)
        .map(|s| format!("{s}"))
        .collect();
    assert_eq!(
        mask, 0,
        "{}: {when} the job (pid {pid} here, at {place:?}) has signals {names:?} blocked \
         (SigBlk {mask:016x}), though it never blocks any; signals sent to mrun cannot reach it",
        job.label
    );
}

/// Makes the hopper print step `k` and checks it still sees its own pid as the job id.
fn hopper_step(sb: &Sandbox, job: &mut Job, k: u32) {
    write_atomically(&sb.path(&format!("step-{k}")), "");
    let id = job.id;
    job.mrun
        .wait_for_stdout(&format!("STEP {k} PID {id} SYSPID {id} TID {id}\n"));
}

/// Tells the hopper how to end ("exit N" or "abort").
fn hopper_end(sb: &Sandbox, how: &str) {
    write_atomically(&sb.path("end"), how);
}

/// Moves the job to `local` and checks it runs under the agent there.
fn send_away(mrun: &Mrun, job: &Job) {
    job.assert_place(Place::Home);
    mrun.migrate_ok(job, "local");
    job.assert_place(Place::Away);
}

/// For the signal tests: the hopper starts with no signal blocked, and is sent away with none
/// blocked (so a failure names the cause instead of waiting for a signal that cannot arrive).
fn start_hopper_and_send_away(mrun: &Mrun, mode: &str) -> Job {
    let job = start_hopper(mrun, mode);
    assert_nothing_blocked(&job, "started by mrun,");
    send_away(mrun, &job);
    assert_nothing_blocked(&job, "moved to local,");
    job
}

/// No `mrun-agent` is left below the job's mrun (a failed move must not leave one behind).
fn assert_no_agent(job: &Job) {
    let mut left = Vec::new();
    let gone = wait_until(TIMEOUT, || {
        left = descendants(job.mrun_pid())
            .into_iter()
            .filter(|&d| {
                status_field(d, "Name").as_deref() == Some("mrun-agent")
                    && !matches!(process_state(d), Some('Z') | None)
            })
            .collect();
        left.is_empty()
    });
    assert!(
        gone,
        "{}: mrun-agent processes left behind: {left:?}",
        job.label
    );
}

/// The directory is private to `uid`: a real directory (not a symlink), mode 0700, owned by it.
fn assert_private_dir(dir: &Path, uid: u32) {
    let meta = std::fs::symlink_metadata(dir)
        .unwrap_or_else(|e| panic!("the job socket directory {}: {e}", dir.display()));
    assert!(meta.is_dir(), "{} is not a directory", dir.display());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o700,
        "mode of the job socket directory {}",
        dir.display()
    );
    assert_eq!(meta.uid(), uid, "owner of {}", dir.display());
}

/// Writes `data` to the job's stdin pipe from a helper thread, failing (after killing the job)
/// if that does not complete within [`TIMEOUT`]: a job that stops reading must not hang the test.
fn feed(job: &mut Job, stdin: &mut File, data: &[u8], what: &str) {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _ = tx.send(stdin.write_all(data));
        });
        let result = rx.recv_timeout(TIMEOUT);
        if !matches!(result, Ok(Ok(()))) {
            // Killing the job (and everything under mrun) closes the pipe's read ends, which
            // ends a blocked write.
            job.mrun.kill();
            panic!(
                "{}: writing {what} ({} bytes) to its stdin: {result:?}; mrun's stderr: {}",
                job.label,
                data.len(),
                job.mrun.stderr_text()
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Compressors moved mid-run produce byte-identical output.
// ---------------------------------------------------------------------------------------------

/// `mrun gzip -9 -c FILE > out.gz`, moved home -> local -> home -> local.
#[test]
fn gzip_to_file_three_hops() {
    let sb = Sandbox::new("mig-gzip-file");
    let mrun = Mrun::new(&sb);
    let input = gzip_input();
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    output_across_hops(
        &mrun,
        "gzip -9 to a file",
        "gzip",
        &args,
        gzip_reference(),
        Sink::File,
        &["local", "home", "local"],
    );
}

/// `mrun gzip -9 -c FILE | test`, moved home -> local -> home -> local: while away the output
/// is relayed through mrun, at home the job writes the pipe itself.
#[test]
fn gzip_to_pipe_three_hops() {
    let sb = Sandbox::new("mig-gzip-pipe");
    let mrun = Mrun::new(&sb);
    let input = gzip_input();
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    output_across_hops(
        &mrun,
        "gzip -9 to a pipe",
        "gzip",
        &args,
        gzip_reference(),
        Sink::Pipe,
        &["local", "home", "local"],
    );
}

/// `mrun xz -T1 -6 -c FILE > out.xz`, moved home -> local -> home (xz -6 has a large
/// dictionary, so the image carries tens of MiB of its memory each way).
#[test]
fn xz_to_file_two_hops() {
    let sb = Sandbox::new("mig-xz");
    let mrun = Mrun::new(&sb);
    let input = text_file(2 * MIB);
    let args: Vec<&OsStr> = vec![
        OsStr::new("-T1"),
        OsStr::new("-6"),
        OsStr::new("-c"),
        input.as_os_str(),
    ];
    let want = reference("xz -T1 -6 -c", "xz", &args, &[], Input::Null);
    output_across_hops(
        &mrun,
        "xz -T1 -6 to a file",
        "xz",
        &args,
        &want,
        Sink::File,
        &["local", "home"],
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Jobs reading stdin while input still arrives.
// ---------------------------------------------------------------------------------------------

/// Feeds the first half of a 6 MiB text to `mrun PROGRAM ARGS...` through a pipe (the write
/// returns once the job, at home, has read all but a pipe's worth of it), moves the job to
/// `local`, feeds the rest (now relayed by mrun) and closes stdin; the output must be what the
/// program prints for the whole input in one go.
fn stdin_across_move(name: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) {
    stdin_across_moves(name, program, args, envs, &["local"]);
}

/// Like [`stdin_across_move`], with the input fed in parts between several moves (`home` among
/// them): what a copy had not read yet when it left must reach the next copy, in order.
fn stdin_across_moves(
    name: &str,
    program: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    hops: &[&str],
) {
    let sb = Sandbox::new(name);
    let mrun = Mrun::new(&sb);
    let input = text_file(6 * MIB);
    let data = read(&input);
    let want = reference(name, program, args, envs, Input::File(input.clone()));

    let (read_end, mut write_end) = pipe();
    let mut job = mrun.start(
        name,
        program,
        args,
        envs,
        Input::Stdio(read_end.into()),
        Output::Pipe,
    );
    let part = data.len() / (hops.len() + 1);
    feed(&mut job, &mut write_end, &data[..part], "the first part");
    for (i, hop) in hops.iter().enumerate() {
        if *hop == "local" {
            send_away(&mrun, &job);
        } else {
            mrun.migrate_ok(&job, hop);
        }
        let end = if i + 1 == hops.len() {
            data.len()
        } else {
            part * (i + 2)
        };
        feed(
            &mut job,
            &mut write_end,
            &data[part * (i + 1)..end],
            &format!("part {} (after moving to {hop})", i + 2),
        );
    }
    drop(write_end);
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stderr.is_empty(),
        "{name}: mrun printed on stderr: {}",
        done.describe()
    );
    assert_same_bytes(name, &done.stdout, &want);
}

#[test]
fn stdin_sha256sum_many_hops() {
    stdin_across_moves(
        "mig-stdin-sha256-hops",
        Path::new("/usr/bin/sha256sum"),
        &["-"],
        &[],
        &["local", "home", "local", "home"],
    );
}

#[test]
fn stdin_python_line_counter_many_hops() {
    stdin_across_moves(
        "mig-stdin-python-hops",
        &python3(),
        &["-c", PYTHON_LINE_COUNTER],
        &[("PYTHONHASHSEED", "0")],
        &["local", "home", "local"],
    );
}

#[test]
fn stdin_sort() {
    stdin_across_move(
        "mig-stdin-sort",
        Path::new("/usr/bin/sort"),
        &["--parallel=1", "-S", "64M", "-k3,3", "-k2,2n"],
        &[("LC_ALL", "C")],
    );
}

#[test]
fn stdin_sha256sum() {
    stdin_across_move(
        "mig-stdin-sha256",
        Path::new("/usr/bin/sha256sum"),
        &["-"],
        &[],
    );
}

/// Counts lines, bytes and words and folds every line into a checksum.
const PYTHON_LINE_COUNTER: &str = r#"
import sys
lines = words = size = 0
acc = 7
for line in sys.stdin.buffer:
    lines += 1
    size += len(line)
    words += len(line.split())
    acc = (acc * 1000003 + hash(line)) & 0xffffffffffffffff
print(lines, words, size, acc)
"#;

#[test]
fn stdin_python_line_counter() {
    stdin_across_move(
        "mig-stdin-python",
        &python3(),
        &["-c", PYTHON_LINE_COUNTER],
        &[("PYTHONHASHSEED", "0")],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Signals and endings of a job that is away.
// ---------------------------------------------------------------------------------------------

/// Sends `sig` to mrun while the hopper (in `mode`) is away and returns how mrun ended.
fn signal_while_away(name: &str, mode: &str, sig: i32) -> Finished {
    let sb = Sandbox::new(name);
    let mrun = Mrun::new(&sb);
    let job = start_hopper_and_send_away(&mrun, mode);
    send_signal(job.mrun_pid(), sig);
    job.finish()
}

#[test]
fn sigterm_to_mrun_reaches_handler_away() {
    let done = signal_while_away("mig-sigterm-handled", "handle", libc::SIGTERM);
    done.assert_exit_code(42);
    assert!(
        done.stdout_text().ends_with("CAUGHT SIGTERM\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn sigterm_to_mrun_kills_job_away() {
    let done = signal_while_away("mig-sigterm-default", "default", libc::SIGTERM);
    done.assert_signal(libc::SIGTERM);
    assert!(
        !done.stdout_text().contains("CAUGHT"),
        "{}",
        done.describe()
    );
}

#[test]
fn sigint_to_mrun_reaches_handler_away() {
    let done = signal_while_away("mig-sigint-handled", "handle", libc::SIGINT);
    done.assert_exit_code(43);
    assert!(
        done.stdout_text().ends_with("CAUGHT SIGINT\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn sigint_to_mrun_kills_job_away() {
    let done = signal_while_away("mig-sigint-default", "default", libc::SIGINT);
    done.assert_signal(libc::SIGINT);
}

/// SIGUSR1 sent to mrun twice reaches the handler twice; then the job exits 0 and so does mrun.
#[test]
fn sigusr1_relayed_then_exit_0_away() {
    let sb = Sandbox::new("mig-usr1-exit0");
    let mrun = Mrun::new(&sb);
    let mut job = start_hopper_and_send_away(&mrun, "handle");
    send_signal(job.mrun_pid(), libc::SIGUSR1);
    job.mrun.wait_for_stdout("USR1 1\n");
    send_signal(job.mrun_pid(), libc::SIGUSR1);
    job.mrun.wait_for_stdout("USR1 2\n");
    job.assert_place(Place::Away);
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stdout_text().ends_with("USR1 2\nEXIT 0\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn exit_code_0_away() {
    let sb = Sandbox::new("mig-exit0");
    let mrun = Mrun::new(&sb);
    let job = start_hopper(&mrun, "default");
    send_away(&mrun, &job);
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stdout_text().ends_with("EXIT 0\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn exit_code_3_away() {
    let sb = Sandbox::new("mig-exit3");
    let mrun = Mrun::new(&sb);
    let job = start_hopper(&mrun, "handle");
    send_away(&mrun, &job);
    hopper_end(&sb, "exit 3");
    let done = job.finish();
    done.assert_exit_code(3);
    assert!(
        done.stdout_text().ends_with("EXIT 3\n"),
        "{}",
        done.describe()
    );
}

#[test]
fn abort_away() {
    let sb = Sandbox::new("mig-abort");
    let mrun = Mrun::new(&sb);
    let job = start_hopper(&mrun, "handle");
    send_away(&mrun, &job);
    hopper_end(&sb, "abort");
    let done = job.finish();
    done.assert_signal(libc::SIGABRT);
    assert!(
        done.stdout_text().ends_with("ABORT\n"),
        "{}",
        done.describe()
    );
}

/// `kill -9` of the job process itself (under the agent) makes mrun die of SIGKILL too.
#[test]
fn sigkill_of_job_away() {
    let sb = Sandbox::new("mig-sigkill");
    let mrun = Mrun::new(&sb);
    let job = start_hopper(&mrun, "handle");
    send_away(&mrun, &job);
    let (pid, _) = job.locate();
    send_signal(pid, libc::SIGKILL);
    let done = job.finish();
    done.assert_signal(libc::SIGKILL);
}

/// Back home after a trip (under mrun's restore helper), SIGTERM sent to mrun still reaches the
/// job's handler.
#[test]
fn sigterm_reaches_job_back_home() {
    let sb = Sandbox::new("mig-sigterm-home");
    let mrun = Mrun::new(&sb);
    let job = start_hopper_and_send_away(&mrun, "handle");
    mrun.migrate_ok(&job, "home");
    job.assert_place(Place::Home);
    assert_nothing_blocked(&job, "back home,");
    send_signal(job.mrun_pid(), libc::SIGTERM);
    let done = job.finish();
    done.assert_exit_code(42);
    assert!(
        done.stdout_text().ends_with("CAUGHT SIGTERM\n"),
        "{}",
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 5, 6. Refusals and bad requests leave the job at home, untouched.
// ---------------------------------------------------------------------------------------------

/// The "tick N" numbers the refuse victim printed.
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("tick "))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Issue 8: a job with threads moves like any other: to the node `local` and back home, its
/// three threads still ticking (the victim checks them at the end), with a gapless tick count
/// relayed through mrun.
#[test]
fn multi_threaded_job_moves_and_keeps_working() {
    let sb = Sandbox::new("mig-threads");
    let mrun = Mrun::new(&sb);
    let stop = sb.path("stop");
    let dir = sb.mkdir("dir");
    let victim = sb.victim("refuse");
    let mut job = mrun.start(
        "refuse threads",
        &victim,
        &[OsStr::new("threads"), stop.as_os_str(), dir.as_os_str()],
        &[],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("tick 2\n");
    for (node, place) in [("local", Place::Away), ("home", Place::Home)] {
        mrun.migrate_ok(&job, node);
        job.assert_place(place);
        let (pid, _) = job.locate();
        assert!(
            thread_count(pid) >= 4,
            "after the move to {node} the job has {} threads, not 4",
            thread_count(pid)
        );
        let seen = ticks(&job.mrun.stdout_text()).len();
        job.mrun.wait_for_stdout(&format!("tick {}\n", seen + 3));
    }

    sb.touch("stop");
    let done = job.finish();
    assert_victim_passed(&done, "the threaded job moved to local and back");
    let t = ticks(&done.stdout_text());
    assert_eq!(
        t,
        (1..=t.len() as u64).collect::<Vec<_>>(),
        "ticks with a gap"
    );
}

/// A job id nobody runs, and the id of a job that has ended: one line naming the job, exit 1.
#[test]
fn migrate_unknown_job() {
    let sb = Sandbox::new("mig-unknown-job");
    let mrun = Mrun::new(&sb);

    // Larger than any pid_max: never a process.
    let out = mrun.migrate(4_294_000_001, "local");
    out.assert_one_line_error(&["4294000001"])
        .assert_exit_code(1);
    assert!(out.stdout.is_empty(), "{}", out.describe());

    let mut job = start_hopper(&mrun, "handle");
    let id = job.id;
    hopper_step(&sb, &mut job, 1);
    hopper_end(&sb, "exit 0");
    job.finish().assert_success();
    assert!(
        !mrun.socket_path(id).exists(),
        "mrun left its socket {} behind",
        mrun.socket_path(id).display()
    );
    let out = mrun.migrate(id, "local");
    out.assert_one_line_error(&[&id.to_string()])
        .assert_exit_code(1);
    assert!(out.stdout.is_empty(), "{}", out.describe());
}

/// An unknown node: one line naming it, exit 1; the job stays home, unharmed and still movable.
#[test]
fn migrate_to_unknown_node() {
    let sb = Sandbox::new("mig-unknown-node");
    let mrun = Mrun::new(&sb);
    let mut job = start_hopper(&mrun, "handle");

    let out = mrun.migrate(job.id, "no-such-node-42");
    out.assert_one_line_error(&["no-such-node-42"])
        .assert_exit_code(1);
    assert!(out.stdout.is_empty(), "{}", out.describe());
    assert_eq!(job.locate(), (job.id as i32, Place::Home), "the job moved");
    assert_no_agent(&job);
    hopper_step(&sb, &mut job, 1);

    // Asking to bring home a job that is at home changes nothing.
    let out = mrun.migrate(job.id, "home");
    out.assert_success();
    assert_eq!(out.stdout_text().lines().count(), 1, "{}", out.describe());
    assert_eq!(job.locate(), (job.id as i32, Place::Home), "the job moved");

    // The failed attempt left it movable.
    send_away(&mrun, &job);
    hopper_step(&sb, &mut job, 2);
    let out = mrun.migrate(job.id, "no-such-node-42");
    out.assert_one_line_error(&["no-such-node-42"])
        .assert_exit_code(1);
    job.assert_place(Place::Away);
    hopper_step(&sb, &mut job, 3);
    mrun.migrate_ok(&job, "home");
    job.assert_place(Place::Home);
    hopper_step(&sb, &mut job, 4);
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    let text = done.stdout_text();
    assert!(
        text.contains("\nSTEP 4 PID") && text.ends_with("EXIT 0\n"),
        "{}",
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. The job keeps its pid.
// ---------------------------------------------------------------------------------------------

/// getpid(), syscall(SYS_getpid) and gettid() equal the job id at home, after each of four
/// moves (home -> local -> home -> local -> home), and the job runs where mrunctl said. The
/// sockets live in /tmp/mrun-UID (XDG_RUNTIME_DIR unset), private to the user.
#[test]
fn same_pid_across_hops() {
    let sb = Sandbox::new("mig-getpid");
    let mrun = Mrun::new(&sb);
    let mut job = start_hopper(&mrun, "handle");
    // SAFETY: getuid has no preconditions.
    assert_private_dir(&mrun.socket_dir(), unsafe { libc::getuid() });
    assert_eq!(job.locate(), (job.id as i32, Place::Home));
    let hops = [
        ("local", Place::Away),
        ("home", Place::Home),
        ("local", Place::Away),
        ("home", Place::Home),
    ];
    for (k, (node, place)) in hops.iter().enumerate() {
        mrun.migrate_ok(&job, node);
        let (pid, got) = job.locate();
        assert_eq!(got, *place, "after the move to {node}");
        // A restored copy: its own pid namespace, where it has the job id.
        let ns = ns_pids(pid);
        assert!(
            ns.len() >= 2 && ns.last() == Some(&(job.id as i32)),
            "after the move to {node}, the job process {pid} has NSpid {ns:?}"
        );
        hopper_step(&sb, &mut job, k as u32 + 1);
    }
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    let steps = done
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("STEP "))
        .count();
    assert_eq!(steps, hops.len(), "{}", done.describe());
}

// ---------------------------------------------------------------------------------------------
// 8. Another user cannot move the job.
// ---------------------------------------------------------------------------------------------

/// Connects to `socket` as the user of `sb`, sends one request and prints what happened:
/// "CONNECT-ERROR <errno name>" or "REPLY <first line>".
const PYTHON_CONNECT: &str = r#"
import errno, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("CONNECT-ERROR", errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
s.settimeout(30)
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except OSError:
    pass  # the other end may answer and hang up before reading the request
data = b""
try:
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError as e:
    print("IO-ERROR", e, data)
    sys.exit(0)
print("REPLY", data.decode(errors="replace").strip())
"#;

fn connect_as(sb: &Sandbox, socket: &Path, request: &str) -> String {
    let done = sb.run(
        "python3 connect",
        python3(),
        &[
            OsStr::new("-c"),
            OsStr::new(PYTHON_CONNECT),
            socket.as_os_str(),
            OsStr::new(request),
        ],
        Input::Null,
    );
    done.assert_success();
    done.stdout_text().trim().to_string()
}

/// The job socket directory is the user's, mode 0700. User nobody cannot move root's job: not
/// with mrunctl (whatever its XDG_RUNTIME_DIR), not by connecting to the socket, and not even
/// with the directory and the socket opened to everyone (the job's mrun checks who is asking).
/// The job stays at home, untouched, and its owner can still move it.
#[test]
fn other_user_cannot_migrate() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run a second user");
        return;
    }
    let sb = Sandbox::new("mig-security");
    // nobody must be able to reach the socket path, so that only the job's own protections
    // stand in its way.
    std::fs::set_permissions(sb.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let xdg = sb.mkdir("xdg");
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o755)).expect("chmod xdg");
    let mrun = Mrun::new(&sb).with_runtime_dir(RuntimeDir::At(xdg.clone()));
    let mut job = start_hopper(&mrun, "handle");
    let dir = mrun.socket_dir();
    let socket = mrun.socket_path(job.id);
    assert_private_dir(&dir, 0);
    assert!(socket.exists(), "no socket at {}", socket.display());

    let other_sb = Sandbox::for_user("mig-security-nobody", User::Nobody);
    let nobody_default = Mrun::new(&other_sb);
    let nobody_pointed = Mrun::new(&other_sb).with_runtime_dir(RuntimeDir::At(xdg.clone()));
    let untouched = |job: &Job| {
        let (pid, place) = job.locate();
        assert_eq!((pid, place), (job.id as i32, Place::Home), "the job moved");
        assert_no_agent(job);
    };

    // nobody's own socket directory has no such job.
    let out = nobody_default.migrate(job.id, "local");
    out.assert_one_line_error(&[&job.id.to_string()])
        .assert_exit_code(1);
    untouched(&job);

    // Pointed at root's directory, mrunctl refuses it (not nobody's) or cannot connect.
    let out = nobody_pointed.migrate(job.id, "local");
    out.assert_one_line_error(&[&job.id.to_string(), "director", "permission"])
        .assert_exit_code(1);
    eprintln!("nobody's mrunctl: {}", out.stderr_text().trim());
    untouched(&job);

    // The directory keeps nobody from even connecting.
    let got = connect_as(&other_sb, &socket, "migrate local");
    assert_eq!(
        got, "CONNECT-ERROR EACCES",
        "nobody reached root's job socket"
    );
    untouched(&job);

    // Opened up, the connection works but the request is turned away.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod dir");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod sock");
    let got = connect_as(&other_sb, &socket, "migrate local");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o755)).expect("chmod sock");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod dir");
    eprintln!("nobody connecting to the opened-up socket: {got}");
    assert!(
        !got.starts_with("REPLY ok"),
        "nobody moved root's job: {got}"
    );
    untouched(&job);
    hopper_step(&sb, &mut job, 1);

    // Its owner still can.
    send_away(&mrun, &job);
    hopper_step(&sb, &mut job, 2);
    mrun.migrate_ok(&job, "home");
    hopper_step(&sb, &mut job, 3);
    hopper_end(&sb, "exit 0");
    job.finish().assert_success();
}

// ---------------------------------------------------------------------------------------------
// 9. Everything as user nobody.
// ---------------------------------------------------------------------------------------------

/// gzip to a file, home -> local -> home, with mrun, mrunctl, the agent and the job all run as
/// nobody and XDG_RUNTIME_DIR pointing to a directory nobody owns.
#[test]
fn gzip_as_nobody() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run as nobody");
        return;
    }
    let sb = Sandbox::for_user("mig-nobody-gzip", User::Nobody);
    let xdg = sb.mkdir("xdg");
    let mrun = Mrun::new(&sb).with_runtime_dir(RuntimeDir::At(xdg));
    let input = sb.input(&gzip_input());
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    output_across_hops(
        &mrun,
        "gzip -9 to a file as nobody",
        "gzip",
        &args,
        gzip_reference(),
        Sink::File,
        &["local", "home"],
    );
}

/// As nobody with XDG_RUNTIME_DIR unset (sockets in /tmp/mrun-65534): the job keeps its pid
/// away and back, and mrun ends with its exit code.
#[test]
fn hopper_as_nobody_default_socket_dir() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to run as nobody");
        return;
    }
    let sb = Sandbox::for_user("mig-nobody-hopper", User::Nobody);
    let mrun = Mrun::new(&sb);
    let mut job = start_hopper(&mrun, "handle");
    assert_eq!(
        mrun.socket_dir(),
        PathBuf::from(format!("/tmp/mrun-{NOBODY}"))
    );
    assert_private_dir(&mrun.socket_dir(), NOBODY);
    assert_eq!(
        status_field(job.id as i32, "Uid")
            .and_then(|u| u.split_whitespace().next().map(str::to_string)),
        Some(NOBODY.to_string()),
        "the job does not run as nobody"
    );
    send_away(&mrun, &job);
    hopper_step(&sb, &mut job, 1);
    mrun.migrate_ok(&job, "home");
    job.assert_place(Place::Home);
    hopper_step(&sb, &mut job, 2);
    hopper_end(&sb, "exit 3");
    let done = job.finish();
    done.assert_exit_code(3);
    assert!(
        done.stdout_text().ends_with("EXIT 3\n"),
        "{}",
        done.describe()
    );
}
