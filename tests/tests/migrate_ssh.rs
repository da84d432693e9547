//! Jobs started with `mrun COMMAND` and moved with `mrunctl migrate JOB NODE|home` to SSH nodes
//! while they run: the nodes are real OpenSSH servers on 127.0.0.1 started by the test (see
//! `common/sshd.rs`), each with its own host key, and `mrun` reaches them with the client
//! `HOME` the test wrote (`.ssh/config` Host blocks `a` and `b`, a key, known_hosts).
//!
//! What must hold, as for the node `local`: output byte-identical to an uninterrupted run,
//! stdin, signals and the way the job ends relayed through `mrun`, the same pid everywhere;
//! and, for SSH specifically: every failure before the node confirms (agent killed at each
//! step, sshd gone, unknown or changed host key, a refused client key, another protocol
//! version, an agent that cannot be installed) is one line from `mrunctl migrate`, exit 1, and
//! the job goes on at home with correct output; the agent is installed into the node's
//! `~/.cache/mrun` when it is not there; a connection cut while the job runs away ends `mrun`
//! with "lost the connection" and exit 255.
//!
//! By default `mrun` reaches nodes through its home daemon (one per HOME, started on demand;
//! the test's `ClientHome` kills it at the end); the `_direct` variants set `MRUN_NO_DAEMON=1`
//! so that the deputy connects itself. Every wait is bounded; a refused move must be answered
//! within 30 s.
//!
//! Runs as root (sshd must run as root to log a user in). Build first:
//! `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Nodes `a` and `b` and a client home that knows and may log in to both.
fn two_nodes(sb: &Sandbox) -> (Node, Node, ClientHome) {
    let a = Node::start(sb, "a");
    let b = Node::start(sb, "b");
    let client = ClientHome::for_nodes(sb, &[("a", &a), ("b", &b)]);
    (a, b, client)
}

/// Node `a` and a client home that knows and may log in to it.
fn one_node(sb: &Sandbox) -> (Node, ClientHome) {
    let a = Node::start(sb, "a");
    let client = ClientHome::for_nodes(sb, &[("a", &a)]);
    (a, client)
}

/// What `migrate_ok` expects a node name to be found as.
fn at_of(node: &str) -> At {
    if node == "home" {
        At::Home
    } else {
        At::Node(node.to_string())
    }
}

/// Starts `mrun PROGRAM ARGS...` with stdout to `sink`, moves it along `hops` (node aliases or
/// "home"), each time once its output has passed the next fraction of `want` and grown since
/// the previous move (with `Progress::InputRead` or `ThreadsRunning`: once it has read the next
/// fraction of its fd 0, and, for the latter, runs several threads), checks where it runs after each move, then asserts it ends with exit 0,
/// nothing on stderr and exactly `want` as output.
#[allow(clippy::too_many_arguments)]
fn output_across_hops(
    m: &SshMrun,
    nodes: &[&Node],
    label: &str,
    program: &str,
    args: &[&OsStr],
    want: &[u8],
    sink: Sink,
    hops: &[&str],
    progress: Progress,
) {
    let sb = m.mrun.sandbox();
    let out_path = sb.output_file("job.out");
    let stdout = match sink {
        Sink::File => Output::File(out_path.clone()),
        Sink::Pipe => Output::Pipe,
    };
    let job = m.start(label, program, args, Input::Null, stdout);
    let len = |job: &Job| match sink {
        Sink::File => file_len(&out_path),
        Sink::Pipe => job.mrun.stdout_len(),
    };
    let mut last = 0;
    for (i, node) in hops.iter().enumerate() {
        // Early fractions (1/(n+3), 2/(n+3)...): each move needs an SSH connection while the
        // job runs, and the last one must still come well before the end.
        let fraction = |total: usize| total * (i + 1) / (hops.len() + 3);
        if let Progress::OutputGrows = progress {
            let target = fraction(want.len()).max(last);
            let grew = wait_until(TIMEOUT, || len(&job) > target);
            assert!(
                grew,
                "{label}: output stuck at {} of {} bytes before the move to {node}; mrun's \
                 stderr: {}",
                len(&job),
                want.len(),
                job.mrun.stderr_text()
            );
        } else {
            let (root, _) = locate(&job, nodes);
            // In a tree, the member that reads the input shows the progress.
            let pid = match progress {
                Progress::MemberInputRead(name) => member_named(root, name, label),
                _ => root,
            };
            let input = file_len(Path::new(&format!("/proc/{pid}/fd/0")));
            let target = fraction(input) as u64;
            if let Progress::ThreadsRunning = progress {
                wait_threads_running(pid, label, target);
            } else {
                let read = wait_until(TIMEOUT, || fd_offset(pid, 0).unwrap_or(0) > target);
                assert!(
                    read,
                    "{label}: never read {target} bytes before the move to {node}"
                );
            }
        }
        m.mrun.migrate_ok(&job, node);
        last = len(&job);
        assert!(
            last < want.len(),
            "{label}: the move to {node} came after all the output was written; nothing was tested"
        );
        assert_at(&job, nodes, at_of(node));
        eprintln!(
            "{label}: moved to {node} at {last} of {} output bytes",
            want.len()
        );
    }
    let done = job.finish();
    done.assert_quiet_success(label);
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

/// Starts the `hopper` victim (tests/victims/hopper.c) under `m` and waits until it is READY.
fn start_hopper(m: &SshMrun, mode: &str) -> Job {
    let sb = m.mrun.sandbox();
    reset_controls(sb);
    let victim = sb.victim("hopper");
    let mut job = m.start(
        &format!("hopper {mode}"),
        &victim,
        &[sb.dir().as_os_str(), OsStr::new(mode)],
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

/// Removes the control files (step-K, end) a previous job of the sandbox left.
fn reset_controls(sb: &Sandbox) {
    for e in std::fs::read_dir(sb.dir())
        .expect("read the sandbox")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "end" || name.starts_with("step-") {
            std::fs::remove_file(e.path()).unwrap_or_else(|err| panic!("rm {name}: {err}"));
        }
    }
}

/// Makes the hopper print step `k` and checks it sees its own pid as the job id.
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

/// Writes `data` to the job's stdin pipe from a helper thread, failing (after killing the job)
/// if that does not complete within [`TIMEOUT`].
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

/// Live processes, anywhere on this machine, that are a copy of the job: the original (pid =
/// job id) or a restored copy (own pid = job id in a nested pid namespace), traced or not.
fn job_copies(id: u32) -> Vec<i32> {
    let id = id as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|&p| {
                    let ns = ns_pids(p);
                    ns.last() == Some(&id)
                        && (ns.len() >= 2 || p == id)
                        && !matches!(process_state(p), Some('Z') | Some('X') | None)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// After a failed move: the job is the original process at home, running, the only copy of
/// itself on the machine, and no `mrun-agent` is left on the node.
fn assert_stayed_home(job: &Job, nodes: &[&Node]) {
    let (pid, at) = locate(job, nodes);
    assert_eq!(
        (pid, at),
        (job.id as i32, At::Home),
        "{}: the job moved",
        job.label
    );
    assert!(
        matches!(process_state(pid), Some('R') | Some('S')),
        "{}: the job was left in state {:?}",
        job.label,
        process_state(pid)
    );
    let mut copies = Vec::new();
    let single = wait_until(TIMEOUT, || {
        copies = job_copies(job.id);
        copies == [job.id as i32]
    });
    assert!(
        single,
        "{}: other copies of the job survive the failed move: {:?}",
        job.label,
        copies
            .iter()
            .map(|&p| (
                p,
                ns_pids(p),
                status_field(p, "Name"),
                process_state(p),
                status_field(p, "PPid")
            ))
            .collect::<Vec<_>>()
    );
    for node in nodes {
        let mut left = Vec::new();
        let gone = wait_until(TIMEOUT, || {
            left = node.agent_processes();
            left.is_empty()
        });
        assert!(
            gone,
            "{}: mrun-agent left running on node {}: {left:?}",
            job.label,
            node.name()
        );
    }
}

/// How long a refused move may take: mrun gives up connecting after 20 s itself.
const REFUSAL_LIMIT: Duration = Duration::from_secs(30);

/// `mrunctl migrate` refused: exit 1, nothing on stdout, one line on stderr mentioning one of
/// `keywords`. Returns that line.
fn assert_refused(out: &Finished, keywords: &[&str]) -> String {
    out.assert_one_line_error(keywords).assert_exit_code(1);
    assert!(
        out.stdout.is_empty(),
        "output on stdout: {}",
        out.describe()
    );
    let line = out.stderr_text().trim().to_string();
    eprintln!("{}: {line}", out.label);
    line
}

/// A python3 job holding 20 MiB of random bytes (touched and incompressible, so its image is
/// well over 1 MiB even compressed) that prints "PID <pid>", "CRC <crc32 of them>", "READY",
/// then "STEP K <pid> <crc32>" when DIR/step-K appears and "END <crc32>" (exit 0) when DIR/end
/// appears.
const PYTHON_BIG: &str = r#"
import os, sys, time, zlib
d = sys.argv[1]
data = os.urandom(20 * 1024 * 1024)
print("PID", os.getpid(), flush=True)
print("CRC", zlib.crc32(data), flush=True)
print("READY", flush=True)
step = 1
for _ in range(10000):
    if os.path.exists(f"{d}/step-{step}"):
        print("STEP", step, os.getpid(), zlib.crc32(data), flush=True)
        step += 1
    if os.path.exists(f"{d}/end"):
        print("END", zlib.crc32(data), flush=True)
        sys.exit(0)
    time.sleep(0.01)
sys.exit(99)
"#;

fn start_python_big(m: &SshMrun, label: &str) -> Job {
    let sb = m.mrun.sandbox();
    reset_controls(sb);
    let script = OsStr::new(PYTHON_BIG);
    let mut job = m.start(
        label,
        python3(),
        &[OsStr::new("-c"), script, sb.dir().as_os_str()],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    job
}

fn python_big_step(sb: &Sandbox, job: &mut Job, k: u32) {
    write_atomically(&sb.path(&format!("step-{k}")), "");
    job.mrun.wait_for_stdout(&format!("STEP {k} {} ", job.id));
}

/// Ends the python job after `steps` steps and checks its whole output: its pid never changed
/// and its memory is what it was at the start.
fn python_big_end(sb: &Sandbox, job: Job, steps: u32) -> Finished {
    write_atomically(&sb.path("end"), "");
    let id = job.id;
    let done = job.finish();
    done.assert_success();
    let text = done.stdout_text();
    let crc = text
        .lines()
        .find_map(|l| l.strip_prefix("CRC "))
        .unwrap_or_else(|| panic!("no CRC line: {}", done.describe()))
        .to_string();
    let mut want = format!("PID {id}\nCRC {crc}\nREADY\n");
    for k in 1..=steps {
        want.push_str(&format!("STEP {k} {id} {crc}\n"));
    }
    want.push_str(&format!("END {crc}\n"));
    assert_eq!(text, want, "{}", done.describe());
    done
}

// ---------------------------------------------------------------------------------------------
// 1, 2. Compressors moved between home and two nodes give byte-identical output.
// ---------------------------------------------------------------------------------------------

fn gzip_home_a_b_home(name: &str, sink: Sink) {
    let sb = Sandbox::new(name);
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let input = gzip_input();
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    output_across_hops(
        &m,
        &[&a, &b],
        &format!("gzip -9 to a {sink:?}"),
        "gzip",
        &args,
        gzip_reference(),
        sink,
        &["a", "b", "home"],
        Progress::OutputGrows,
    );
}

/// `mrun gzip -9 -c FILE > out.gz` (a file the test opened), home -> a -> b -> home.
#[test]
fn gzip_to_file_home_a_b_home() {
    gzip_home_a_b_home("ssh-gzip-file", Sink::File);
}

/// `mrun gzip -9 -c FILE | test`, home -> a -> b -> home: away, the output is relayed.
#[test]
fn gzip_to_pipe_home_a_b_home() {
    gzip_home_a_b_home("ssh-gzip-pipe", Sink::Pipe);
}

/// `mrun xz -T1 -6 -c FILE > out.xz`, home -> a -> home (tens of MiB of image each way).
#[test]
fn xz_to_file_home_a_home() {
    let sb = Sandbox::new("ssh-xz");
    let (a, client) = one_node(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let input = text_file(2 * MIB);
    let args: Vec<&OsStr> = vec![
        OsStr::new("-T1"),
        OsStr::new("-6"),
        OsStr::new("-c"),
        input.as_os_str(),
    ];
    let want = reference("xz -T1 -6 -c", "xz", &args, &[], Input::Null);
    output_across_hops(
        &m,
        &[&a],
        "xz -T1 -6 to a file",
        "xz",
        &args,
        &want,
        Sink::File,
        &["a", "home"],
        Progress::OutputGrows,
    );
}

// ---------------------------------------------------------------------------------------------
// 2b. Multi-threaded programs (issue 8) moved home -> a -> b -> home, byte-identical output.
// ---------------------------------------------------------------------------------------------

/// `mrun PROGRAM ARGS...` moved home -> a -> b -> home; its output must be byte-identical to
/// an uninterrupted run's.
fn threaded_home_a_b_home(
    name: &str,
    label: &str,
    program: &Path,
    args: &[&OsStr],
    sink: Sink,
    progress: Progress,
) {
    let sb = Sandbox::new(name);
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let want = reference(label, program, args, &[], Input::Null);
    let program = program.to_str().expect("a UTF-8 program path");
    output_across_hops(
        &m,
        &[&a, &b],
        label,
        program,
        args,
        &want,
        sink,
        &["a", "b", "home"],
        progress,
    );
}

/// `sh -c SCRIPT sh INPUT` run under mrun and moved home -> a -> b -> home, its output compared
/// with an uninterrupted run.
fn script_home_a_b_home(
    name: &str,
    label: &str,
    script: &str,
    input: &Path,
    sink: Sink,
    progress: Progress,
) {
    let args = [
        OsStr::new("-c"),
        OsStr::new(script),
        OsStr::new("sh"),
        input.as_os_str(),
    ];
    threaded_home_a_b_home(name, label, Path::new("sh"), &args, sink, progress);
}

/// `PROGRAM_ARGS... FILE` as OsStr arguments.
fn with_file<'a>(args: &[&'a str], file: &'a Path) -> Vec<&'a OsStr> {
    let mut v: Vec<&OsStr> = args.iter().map(|a| OsStr::new(*a)).collect();
    v.push(file.as_os_str());
    v
}

/// Issue 9: `sh -c 'gzip -9 < big | sha256sum'`, the whole tree moved home -> a -> b -> home.
#[test]
fn pipeline_under_sh_home_a_b_home() {
    let input = text_file(24 * MIB);
    let script = r#"gzip -9 < "$1" | sha256sum"#;
    script_home_a_b_home(
        "ssh-pipeline",
        "sh: gzip | sha256sum",
        script,
        &input,
        Sink::File,
        Progress::MemberInputRead("gzip"),
    );
}

/// Issue 9: a shell loop calling a compressor per round in a subshell (the tree changes shape
/// all the time), moved home -> a -> b -> home between rounds.
#[test]
fn script_loop_home_a_b_home() {
    let input = text_file(4 * MIB);
    let script = r#"for i in 1 2 3 4 5 6 7 8 9 10 11 12; do (gzip -6 < "$1" | wc -c; echo "round $i"); done"#;
    script_home_a_b_home(
        "ssh-loop",
        "sh loop of subshells",
        script,
        &input,
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// Issue 9: the C parent feeding three workers over pipes, one worker exited and not reaped,
/// moved home -> a -> b -> home: every result right, every pid, parent, group and session kept,
/// the three reaped with their exit codes.
#[test]
fn parent_and_workers_home_a_b_home() {
    victim_home_a_b_home("ssh-workers", "workers");
}

/// Issue 9: process groups with an exited leader and a later-forked leader, moved home -> a ->
/// b -> home (away, the root leads a group of its own, and every member finds its group).
#[test]
fn process_groups_home_a_b_home() {
    victim_home_a_b_home("ssh-groups", "groups");
}

/// Victim `name` started under mrun, moved home -> a -> b -> home once READY, then told to go
/// on and check its state.
fn victim_home_a_b_home(sandbox: &str, name: &str) {
    let sb = Sandbox::new(sandbox);
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let go = sb.path("go");
    let mut job = m.start(
        name,
        sb.victim(name),
        &[go.as_os_str()],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    for node in ["a", "b", "home"] {
        m.mrun.migrate_ok(&job, node);
        assert_at(&job, &[&a, &b], at_of(node));
    }
    sb.touch("go");
    let done = job.finish();
    assert_victim_passed(&done, &format!("the {name} victim after three moves"));
}

/// Issue 10: Python writing into `tempfile.TemporaryFile()` and reading it back, moved home ->
/// a -> b -> home: the deleted file's contents travel with it.
#[test]
fn python_temporary_file_home_a_b_home() {
    // Long enough (about 4 s) for three moves, each of which waits for more output.
    let input = text_file(8 * MIB);
    let script = tempfile_script();
    script_home_a_b_home(
        "ssh-tempfile",
        "python3 TemporaryFile",
        &script,
        &input,
        Sink::File,
        Progress::OutputGrows,
    );
}

/// Issue 9: Python's `multiprocessing.Pool(2)` mapping a CPU-bound function, moved home -> a ->
/// b -> home while results come in.
#[test]
fn python_pool_home_a_b_home() {
    let input = text_file(4 * MIB);
    let script = pool_script();
    script_home_a_b_home(
        "ssh-pool",
        "python3 multiprocessing.Pool(2)",
        &script,
        &input,
        Sink::File,
        Progress::OutputGrows,
    );
}

/// 16 blocks of 1 MiB: output grows a block at a time, the last two blocks end together, and a
/// move (with pre-copy rounds while the job runs) can cover three blocks of progress, so eight
/// blocks left too little for the last hop (CI: the job ended before the move home).
const THREADED_XZ_INPUT: usize = 16 * MIB;

#[test]
fn xz_two_threads_home_a_b_home() {
    let input = text_file(THREADED_XZ_INPUT);
    threaded_home_a_b_home(
        "ssh-xz-t2",
        "xz -T2",
        Path::new("xz"),
        &with_file(&XZ_T2_ARGS, &input),
        Sink::File,
        Progress::OutputGrows,
    );
}

#[test]
fn xz_threads_per_cpu_home_a_b_home() {
    let input = text_file(THREADED_XZ_INPUT);
    threaded_home_a_b_home(
        "ssh-xz-t0",
        "xz -T0",
        Path::new("xz"),
        &with_file(&XZ_T0_ARGS, &input),
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

#[test]
fn pigz_two_threads_home_a_b_home() {
    // pigz on two cores outruns three SSH moves on a smaller input when CI is busy.
    let input = text_file(128 * MIB);
    threaded_home_a_b_home(
        "ssh-pigz",
        "pigz -p 2",
        Path::new("pigz"),
        &with_file(&PIGZ_ARGS, &input),
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// sort reads its input as fd 0 (a file the job's shell opened), each move while its sorting
/// threads run.
#[test]
fn sort_two_threads_home_a_b_home() {
    let input = text_file(64 * MIB);
    let script = format!(
        r#"LC_ALL=C; export LC_ALL; exec sort {} < "$1""#,
        SORT_THREADED_ARGS.join(" ")
    );
    script_home_a_b_home(
        "ssh-sort-t2",
        "sort --parallel=2",
        &script,
        &input,
        Sink::File,
        Progress::ThreadsRunning,
    );
}

#[test]
fn python3_three_threads_home_a_b_home() {
    let script = python_workers();
    let mut args: Vec<&OsStr> = vec![OsStr::new("-u"), script.as_os_str()];
    args.extend(PYTHON_WORKERS_ARGS.iter().map(OsStr::new));
    threaded_home_a_b_home(
        "ssh-python-threads",
        "python3 3 threads",
        &python3(),
        &args,
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

#[test]
fn go_goroutines_home_a_b_home() {
    let args: Vec<&OsStr> = GO_SPREAD_ARGS.iter().map(OsStr::new).collect();
    threaded_home_a_b_home(
        "ssh-go-spread",
        "go spread",
        &go_spread(),
        &args,
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// Issue 10: a Go program living on the runtime's timers (time.Sleep, a ticker, channels; the
/// runtime's epoll and its wake-up pipe), moved home -> a -> b -> home.
#[test]
fn go_ticker_home_a_b_home() {
    threaded_home_a_b_home(
        "ssh-go-ticker",
        "go ticker",
        &go_ticker(),
        &[],
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// Issue 10: a Python asyncio program (an epoll loop, its self-pipe socketpair, producers and a
/// consumer on a queue, timers) moved home -> a -> b -> home, output byte-identical.
#[test]
fn python_asyncio_home_a_b_home() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncio_queue.py");
    let args = [OsStr::new("-u"), script.as_os_str()];
    threaded_home_a_b_home(
        "ssh-asyncio",
        "python3 asyncio queue",
        &python3(),
        &args,
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// Issue 10: a Python asyncio program serving itself over a unix socket (its listener on a
/// socket file, one connection kept for the whole run, one made anew per round) moved home -> a
/// -> b -> home, output byte-identical: each move finds the socket file of the copy it leaves,
/// frozen, and takes its place.
#[test]
fn python_asyncio_unix_server_home_a_b_home() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncio_unix.py");
    let args = [OsStr::new("-u"), script.as_os_str()];
    threaded_home_a_b_home(
        "ssh-asyncio-unix",
        "python3 asyncio unix server",
        &python3(),
        &args,
        Sink::Pipe,
        Progress::OutputGrows,
    );
}

/// Issue 10: the same program listening on an abstract name cannot move to a node of the same
/// machine (the name is still taken by the frozen original there): the move is refused in one
/// sentence that says so, and the job goes on at home to the same output.
#[test]
fn python_asyncio_abstract_listener_stays_home_on_the_same_machine() {
    let sb = Sandbox::new("ssh-asyncio-abstract");
    let (a, client) = one_node(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncio_unix.py");
    let args = [
        OsStr::new("-u"),
        script.as_os_str(),
        OsStr::new("--abstract"),
    ];
    let label = "python3 asyncio abstract listener";
    let python = python3();
    let want = reference(label, &python, &args, &[], Input::Null);
    let program = python.to_str().expect("a UTF-8 program path");
    let mut job = m.start(label, program, &args, Input::Null, Output::Pipe);
    job.mrun.wait_for_stdout("round 3 ");
    let out = m.migrate_within(&job, "a", REFUSAL_LIMIT);
    assert_refused(&out, &["abstract unix socket name @mrun-asyncio-unix"]);
    assert_stayed_home(&job, &[&a]);
    let done = job.finish();
    done.assert_success();
    assert_same_bytes(label, &done.stdout, &want);
}

/// Issue 10: `tail -f` (an inotify watch, poll(2)) moved home -> a -> b -> home while it waits:
/// the lines appended after the last move come out, and nothing is lost or repeated.
#[test]
fn tail_f_home_a_b_home() {
    let sb = Sandbox::new("ssh-tail");
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let file = sb.path("tailed.txt");
    std::fs::write(&file, "1\n2\n3\n").unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut job = m.start(
        "tail -f",
        "tail",
        &[OsStr::new("-f"), file.as_os_str()],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("3\n");
    let mut expected = String::from("1\n2\n3\n");
    for (k, node) in ["a", "b", "home"].into_iter().enumerate() {
        m.mrun.migrate_ok(&job, node);
        assert_at(&job, &[&a, &b], at_of(node));
        let line = format!("after move {}\n", k + 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        f.write_all(line.as_bytes()).expect("append");
        expected.push_str(&line);
        job.mrun.wait_for_stdout(&line);
    }
    let (pid, _) = locate(&job, &[&a, &b]);
    send_signal(pid, libc::SIGTERM);
    let done = job.finish();
    assert_eq!(done.stdout_text(), expected, "{}", done.describe());
}

// ---------------------------------------------------------------------------------------------
// 3. A job reading stdin while input still arrives.
// ---------------------------------------------------------------------------------------------

/// Feeds the first half of a 6 MiB text to `mrun PROGRAM ARGS...` through a pipe (the write
/// returns once the job, at home, has read all but a pipe's worth), moves the job to node a,
/// feeds the rest (relayed by mrun over SSH) and closes stdin; the output must be what the
/// program prints for the whole input in one go.
///
/// Only ONE move while input arrives: bytes relayed to a node but not yet read by the job are
/// lost when it leaves that node again (a known limitation of protocol version 1).
fn stdin_to_node(name: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) {
    let sb = Sandbox::new(name);
    let (a, client) = one_node(&sb);
    let mut m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    for (k, v) in envs {
        m = m.env(k, v);
    }
    let input = text_file(6 * MIB);
    let data = read(&input);
    let want = reference(name, program, args, envs, Input::File(input.clone()));

    let (read_end, mut write_end) = pipe();
    let mut job = m.start(
        name,
        program,
        args,
        Input::Stdio(read_end.into()),
        Output::Pipe,
    );
    let half = data.len() / 2;
    feed(&mut job, &mut write_end, &data[..half], "the first half");
    assert_at(&job, &[&a], At::Home);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    feed(&mut job, &mut write_end, &data[half..], "the second half");
    drop(write_end);
    let done = job.finish();
    done.assert_quiet_success(name);
    assert_same_bytes(name, &done.stdout, &want);
}

#[test]
fn stdin_sha256sum_to_node() {
    stdin_to_node(
        "ssh-stdin-sha256",
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
fn stdin_python_line_counter_to_node() {
    stdin_to_node(
        "ssh-stdin-python",
        &python3(),
        &["-c", PYTHON_LINE_COUNTER],
        &[("PYTHONHASHSEED", "0")],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Signals and endings of a job on a node.
// ---------------------------------------------------------------------------------------------

/// Starts the hopper (in `mode`), moves it to node a and returns it with what it needs.
fn hopper_on_a<'a>(
    sb: &'a Sandbox,
    a: &Node,
    client: &ClientHome,
    mode: &str,
    via: Via,
) -> (SshMrun<'a>, Job) {
    let m = SshMrun::new(sb, client, RemoteAgent::Built).via(via);
    let mut job = start_hopper(&m, mode);
    hopper_step(sb, &mut job, 1);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[a], At::Node("a".into()));
    hopper_step(sb, &mut job, 2);
    (m, job)
}

fn signal_on_node(name: &str, mode: &str, sig: i32) -> Finished {
    let sb = Sandbox::new(name);
    let (a, client) = one_node(&sb);
    let (_m, job) = hopper_on_a(&sb, &a, &client, mode, Via::Daemon);
    send_signal(job.mrun_pid(), sig);
    job.finish()
}

#[test]
fn sigterm_to_mrun_reaches_handler_on_node() {
    let done = signal_on_node("ssh-sigterm", "handle", libc::SIGTERM);
    done.assert_exit_code(42);
    assert!(
        done.stdout_text().ends_with("CAUGHT SIGTERM\n"),
        "{}",
        done.describe()
    );
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

#[test]
fn sigint_to_mrun_reaches_handler_on_node() {
    let done = signal_on_node("ssh-sigint", "handle", libc::SIGINT);
    done.assert_exit_code(43);
    assert!(
        done.stdout_text().ends_with("CAUGHT SIGINT\n"),
        "{}",
        done.describe()
    );
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

/// Without a handler, SIGTERM kills the job on the node, and mrun dies of SIGTERM too.
#[test]
fn sigterm_to_mrun_kills_job_on_node() {
    let done = signal_on_node("ssh-sigterm-default", "default", libc::SIGTERM);
    done.assert_signal(libc::SIGTERM);
    assert!(
        !done.stdout_text().contains("CAUGHT"),
        "{}",
        done.describe()
    );
}

#[test]
fn exit_code_3_on_node() {
    let sb = Sandbox::new("ssh-exit3");
    let (a, client) = one_node(&sb);
    let (_m, job) = hopper_on_a(&sb, &a, &client, "handle", Via::Daemon);
    hopper_end(&sb, "exit 3");
    let done = job.finish();
    done.assert_exit_code(3);
    let id = done_id(&done);
    assert!(
        done.stdout_text()
            .ends_with(&format!("STEP 2 PID {id} SYSPID {id} TID {id}\nEXIT 3\n")),
        "{}",
        done.describe()
    );
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

fn done_id(done: &Finished) -> String {
    done.stdout_text()
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("PID "))
        .unwrap_or("")
        .to_string()
}

/// abort() on the node: mrun dies of SIGABRT.
#[test]
fn abort_on_node() {
    let sb = Sandbox::new("ssh-abort");
    let (a, client) = one_node(&sb);
    let (_m, job) = hopper_on_a(&sb, &a, &client, "handle", Via::Daemon);
    hopper_end(&sb, "abort");
    let done = job.finish();
    done.assert_signal(libc::SIGABRT);
    assert!(
        done.stdout_text().ends_with("ABORT\n"),
        "{}",
        done.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The agent or the connection dies.
// ---------------------------------------------------------------------------------------------

/// The agent on node a exits abruptly at `fault`: `mrunctl migrate` fails with one line, the
/// job stays at home (the only copy of itself, nothing left on the node) and keeps going; the
/// same job can then move to a and back (the fault is read from a file by the node's shell on
/// each start of the agent), and it ends with exactly the right output.
fn agent_fault(name: &str, fault: &str, via: Via) {
    let sb = Sandbox::new(name);
    let (a, client) = one_node(&sb);
    let fault_file = sb.path("fault");
    std::fs::write(&fault_file, fault).expect("write the fault file");
    let agent = RemoteAgent::Command(format!(
        "env MRUN_AGENT_FAULT=\"$(cat '{}')\" '{}'",
        fault_file.display(),
        agent_path().display()
    ));
    let m = SshMrun::new(&sb, &client, agent).via(via);
    let mut job = start_python_big(&m, &format!("python3 20 MiB, agent fault {fault}, {via:?}"));
    python_big_step(&sb, &mut job, 1);

    let out = m.migrate_within(&job, "a", REFUSAL_LIMIT);
    let line = assert_refused(&out, &["the agent on a", "stays at home"]);
    assert!(!line.contains("now runs on"), "{}", out.describe());
    assert_stayed_home(&job, &[&a]);
    python_big_step(&sb, &mut job, 2);

    std::fs::write(&fault_file, "none").expect("write the fault file");
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    python_big_step(&sb, &mut job, 3);
    m.mrun.migrate_ok(&job, "home");
    assert_at(&job, &[&a], At::Home);
    python_big_step(&sb, &mut job, 4);
    let done = python_big_end(&sb, job, 4);
    eprintln!("{name}: mrun's stderr: {:?}", done.stderr_text());
}

#[test]
fn agent_dies_before_image() {
    agent_fault("ssh-fault-before-image", "before-image", Via::Daemon);
}

#[test]
fn agent_dies_mid_image() {
    agent_fault("ssh-fault-mid-image", "mid-image", Via::Daemon);
}

/// The same without the daemon: the deputy's own SSH connection.
#[test]
fn agent_dies_mid_image_direct() {
    agent_fault("ssh-fault-mid-image-direct", "mid-image", Via::Direct);
}

#[test]
fn agent_dies_after_image() {
    agent_fault("ssh-fault-after-image", "after-image", Via::Daemon);
}

#[test]
fn agent_dies_before_running() {
    agent_fault("ssh-fault-before-running", "before-running", Via::Daemon);
}

/// The node's sshd (listener and session processes) is SIGKILLed while the job runs there:
/// mrun says it lost the connection and exits 255 (the job is lost: documented), and nothing
/// of the job goes on running headless on the node.
fn connection_cut_while_away(name: &str, via: Via) {
    let sb = Sandbox::new(name);
    let (mut a, client) = one_node(&sb);
    let (_m, mut job) = hopper_on_a(&sb, &a, &client, "handle", via);
    let (job_pid, _) = locate(&job, &[&a]);
    let killed = a.kill_sshd();
    assert!(
        !killed.is_empty(),
        "no sshd session process was found below node a's listener"
    );
    let done = job.mrun.wait();
    // mrun has exited; what it wrote may still be on its way through the pipe to our reader.
    wait_until(TIMEOUT, || {
        job.mrun.stderr_text().contains("lost the connection")
    });
    let stderr = job.mrun.stderr_text();
    assert_eq!(
        done.code(),
        Some(255),
        "mrun ended with {done}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("lost the connection"),
        "mrun's stderr does not say it lost the connection: {stderr:?}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "more than one line from mrun: {stderr:?}"
    );
    let done = job.finish();
    eprintln!("mrun: {}", done.stderr_text().trim());
    // The job's copy on the node must not run on without anyone to report to.
    let mut left = Vec::new();
    let gone = wait_until(TIMEOUT, || {
        left = a.surviving_leftovers();
        left.is_empty()
            && !matches!(
                process_state(job_pid),
                Some('R') | Some('S') | Some('D') | Some('t') | Some('T')
            )
    });
    assert!(
        gone,
        "after the connection was cut, processes of node a's sessions still run: {:?} (the job \
         copy was pid {job_pid}, state {:?})",
        left.iter()
            .map(|&p| (
                p,
                status_field(p, "Name"),
                process_state(p),
                status_field(p, "PPid")
            ))
            .collect::<Vec<_>>(),
        process_state(job_pid)
    );
}

#[test]
fn connection_cut_while_away_daemon() {
    connection_cut_while_away("ssh-cut", Via::Daemon);
}

#[test]
fn connection_cut_while_away_direct() {
    connection_cut_while_away("ssh-cut-direct", Via::Direct);
}

/// sshd of node a is gone before the move: "cannot reach node", the job stays home.
fn node_down_before_migrate(name: &str, via: Via) {
    let sb = Sandbox::new(name);
    let (mut a, client) = one_node(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built).via(via);
    let mut job = start_hopper(&m, "handle");
    hopper_step(&sb, &mut job, 1);
    a.kill_sshd();
    let out = m.migrate_within(&job, "a", REFUSAL_LIMIT);
    let line = assert_refused(&out, &["cannot reach node a"]);
    assert!(
        line.contains(&a.port().to_string()),
        "the refusal does not name the port: {line}"
    );
    assert_stayed_home(&job, &[&a]);
    hopper_step(&sb, &mut job, 2);
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
fn node_down_before_migrate_daemon() {
    node_down_before_migrate("ssh-node-down", Via::Daemon);
}

#[test]
fn node_down_before_migrate_direct() {
    node_down_before_migrate("ssh-node-down-direct", Via::Direct);
}

// ---------------------------------------------------------------------------------------------
// 6. Host keys, client keys, protocol versions, the agent's installation.
// ---------------------------------------------------------------------------------------------

/// A failed move to `node` (one line with one of `keywords`), then the job goes on at home and
/// ends correctly. Returns the error line.
fn refused_then_home(m: &SshMrun, nodes: &[&Node], node: &str, keywords: &[&str]) -> String {
    let sb = m.mrun.sandbox();
    let mut job = start_hopper(m, "handle");
    hopper_step(sb, &mut job, 1);
    let out = m.migrate_within(&job, node, REFUSAL_LIMIT);
    let line = assert_refused(&out, keywords);
    assert_stayed_home(&job, nodes);
    hopper_step(sb, &mut job, 2);
    hopper_end(sb, "exit 0");
    let id = job.id;
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stdout_text()
            .ends_with(&format!("STEP 2 PID {id} SYSPID {id} TID {id}\nEXIT 0\n")),
        "{}",
        done.describe()
    );
    assert!(
        done.stderr.is_empty(),
        "mrun printed on stderr: {}",
        done.describe()
    );
    line
}

/// known_hosts has no entry for the node (only for another one): refused, "is not known".
#[test]
fn unknown_host_key_refused() {
    let sb = Sandbox::new("ssh-unknown-host");
    let a = Node::start(&sb, "a");
    let b = Node::start(&sb, "b");
    let mut client = ClientHome::new(&sb);
    client.add_host("a", &a, &[]);
    client.add_host("b", &b, &[]);
    client.add_known(&b.known_hosts_line());
    a.authorize(&[client.public_key()]);
    b.authorize(&[client.public_key()]);
    let before = client.read_known_hosts();
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let line = refused_then_home(&m, &[&a, &b], "a", &["is not known"]);
    assert!(
        line.contains(&a.port().to_string()),
        "the refusal does not name the port: {line}"
    );
    assert_eq!(
        client.read_known_hosts(),
        before,
        "known_hosts changed after a refusal"
    );
}

/// known_hosts has another key for [127.0.0.1]:PORT: refused with "REMOTE HOST IDENTIFICATION
/// HAS CHANGED", also for a Host block that opts into accept-new, and known_hosts is untouched.
#[test]
fn changed_host_key_refused() {
    let sb = Sandbox::new("ssh-changed-host");
    let a = Node::start(&sb, "a");
    let mut client = ClientHome::new(&sb);
    client.add_host("a", &a, &[]);
    client.add_host("a-new", &a, &["StrictHostKeyChecking accept-new"]);
    let other = keygen(&sb.path("other_host_key"), "impostor");
    let other_fields: Vec<&str> = other.split_whitespace().take(2).collect();
    client.add_known(&format!(
        "[127.0.0.1]:{} {}",
        a.port(),
        other_fields.join(" ")
    ));
    a.authorize(&[client.public_key()]);
    let before = client.read_known_hosts();
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let line = refused_then_home(&m, &[&a], "a", &["REMOTE HOST IDENTIFICATION HAS CHANGED"]);
    assert!(line.contains("CHANGED"), "{line}");
    refused_then_home(
        &m,
        &[&a],
        "a-new",
        &["REMOTE HOST IDENTIFICATION HAS CHANGED"],
    );
    assert_eq!(
        client.read_known_hosts(),
        before,
        "known_hosts changed after a refusal"
    );
}

/// Moves a hopper to `node`, home, and to `node` again, then ends it; checks known_hosts
/// learned node a's key for [127.0.0.1]:PORT on the first move.
fn accept_new_round_trip(m: &SshMrun, a: &Node, client: &ClientHome, node: &str) {
    let sb = m.mrun.sandbox();
    assert!(
        !client.read_known_hosts().contains(&a.host_key()),
        "known_hosts already has the key"
    );
    let mut job = start_hopper(m, "handle");
    hopper_step(sb, &mut job, 1);
    m.mrun.migrate_ok(&job, node);
    assert_at(&job, &[a], At::Node("a".into()));
    let known = client.read_known_hosts();
    let key = a.host_key();
    let learned = known.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3
            && format!("{} {}", f[1], f[2]) == key
            && (f[0] == format!("[127.0.0.1]:{}", a.port()) || f[0].starts_with("|1|"))
    });
    assert!(
        learned,
        "known_hosts did not learn {key} for [127.0.0.1]:{}: {known:?}",
        a.port()
    );
    hopper_step(sb, &mut job, 2);
    m.mrun.migrate_ok(&job, "home");
    hopper_step(sb, &mut job, 3);
    m.mrun.migrate_ok(&job, node);
    assert_eq!(
        client.read_known_hosts(),
        known,
        "known_hosts changed again for a known host"
    );
    hopper_step(sb, &mut job, 4);
    hopper_end(sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

/// `StrictHostKeyChecking accept-new` in the Host block: an unknown node is learned and used.
#[test]
fn accept_new_host_key_in_config() {
    let sb = Sandbox::new("ssh-accept-new");
    let a = Node::start(&sb, "a");
    let mut client = ClientHome::new(&sb);
    client.add_host("a", &a, &["StrictHostKeyChecking accept-new"]);
    a.authorize(&[client.public_key()]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    accept_new_round_trip(&m, &a, &client, "a");
}

/// MRUN_ACCEPT_NEW_HOST_KEYS=1 in mrun's environment: the same without the Host block option.
#[test]
fn accept_new_host_key_from_env() {
    let sb = Sandbox::new("ssh-accept-new-env");
    let a = Node::start(&sb, "a");
    let mut client = ClientHome::new(&sb);
    client.add_host("a", &a, &[]);
    a.authorize(&[client.public_key()]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built).env("MRUN_ACCEPT_NEW_HOST_KEYS", "1");
    accept_new_round_trip(&m, &a, &client, "a");
}

/// The node only lets another key in: "refused every key".
#[test]
fn wrong_client_key_refused() {
    let sb = Sandbox::new("ssh-wrong-key");
    let (a, client) = one_node(&sb);
    let other = keygen(&sb.path("other_client_key"), "someone-else");
    a.authorize(&[&other]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    refused_then_home(&m, &[&a], "a", &["refused every key"]);
}

/// The agent claims protocol 99: refused with a line about the protocol.
#[test]
fn other_protocol_version_refused() {
    let sb = Sandbox::new("ssh-protocol");
    let (a, client) = one_node(&sb);
    let m = SshMrun::new(
        &sb,
        &client,
        RemoteAgent::built_with_env("MRUN_AGENT_PROTOCOL=99"),
    );
    let line = refused_then_home(&m, &[&a], "a", &["protocol"]);
    assert!(
        line.contains("99"),
        "the refusal does not name the node's version: {line}"
    );
}

/// `[user@]host:port` as the node name (no Host block): the default key and known_hosts.
#[test]
fn raw_destination_user_host_port() {
    let sb = Sandbox::new("ssh-raw-dest");
    let a = Node::start(&sb, "a");
    let mut client = ClientHome::new(&sb);
    client.add_known(&a.known_hosts_line());
    a.authorize(&[client.public_key()]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let dest = format!("{}@127.0.0.1:{}", login_name(), a.port());
    let mut job = start_hopper(&m, "handle");
    hopper_step(&sb, &mut job, 1);
    m.mrun.migrate_ok(&job, &dest);
    assert_at(&job, &[&a], At::Node("a".into()));
    hopper_step(&sb, &mut job, 2);
    m.mrun.migrate_ok(&job, "home");
    assert_at(&job, &[&a], At::Home);
    hopper_step(&sb, &mut job, 3);
    hopper_end(&sb, "exit 0");
    job.finish().assert_success();
}

/// The node's PATH has no mrun-agent (asserted), so mrun would install it.
fn assert_no_agent_on_path(path: &str) {
    for dir in path.split(':') {
        let p = Path::new(dir).join("mrun-agent");
        assert!(
            !p.exists(),
            "{} exists: the node would use it instead of an install",
            p.display()
        );
    }
}

/// No agent on the node and its HOME cannot be written: one line saying the install failed.
#[test]
fn agent_cannot_be_installed() {
    let sb = Sandbox::new("ssh-no-install");
    let opts = NodeOptions {
        home: NodeHome::At(PathBuf::from("/proc/nonexistent")),
        ..NodeOptions::default()
    };
    assert_no_agent_on_path(&opts.path);
    let a = Node::start_with(&sb, "a", opts);
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Unset);
    let line = refused_then_home(&m, &[&a], "a", &["cannot be installed", "failed"]);
    assert!(line.contains("mrun-agent is not installed on a"), "{line}");
}

/// No agent on the node: mrun uploads its own into the node's ~/.cache/mrun (checked by
/// sha256 there), the job moves; the next move reuses that copy (same file, not uploaded again).
fn agent_installed_on_node(name: &str, via: Via) {
    let sb = Sandbox::new(name);
    let opts = NodeOptions::default();
    assert_no_agent_on_path(&opts.path);
    let a = Node::start_with(&sb, "a", opts);
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Unset).via(via);
    let cache = a.home().join(".cache/mrun");
    assert!(
        !cache.exists(),
        "{} exists before the test",
        cache.display()
    );

    let mut job = start_hopper(&m, "handle");
    hopper_step(&sb, &mut job, 1);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    hopper_step(&sb, &mut job, 2);

    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap_or_else(|e| panic!("the agent was not installed into {}: {e}", cache.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "expected exactly the installed agent in {}: {entries:?}",
        cache.display()
    );
    let installed = &entries[0];
    let fname = installed
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    assert!(
        fname.starts_with("mrun-agent-"),
        "unexpected file {}",
        installed.display()
    );
    assert!(
        read(installed) == read(&agent_path()),
        "{} differs from {}",
        installed.display(),
        agent_path().display()
    );
    let meta = std::fs::metadata(installed).expect("stat the installed agent");
    assert!(
        meta.permissions().mode() & 0o100 != 0,
        "{} is not executable",
        installed.display()
    );
    let dir_mode = std::fs::metadata(&cache)
        .expect("stat cache")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "mode of {}", cache.display());
    // The agent now running the job is that copy.
    let agents = a.agent_processes();
    assert!(
        agents.iter().any(
            |&p| std::fs::read_link(format!("/proc/{p}/exe")).ok().as_deref()
                == Some(installed.as_path())
        ),
        "no mrun-agent on node a runs {}: {:?}",
        installed.display(),
        agents
            .iter()
            .map(|&p| std::fs::read_link(format!("/proc/{p}/exe")))
            .collect::<Vec<_>>()
    );

    m.mrun.migrate_ok(&job, "home");
    hopper_step(&sb, &mut job, 3);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    let again = std::fs::metadata(installed).expect("stat the installed agent");
    assert_eq!(
        (again.ino(), again.mtime(), again.mtime_nsec()),
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        "the agent was installed again instead of being reused"
    );
    let count = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 1, "files left in {}", cache.display());
    hopper_step(&sb, &mut job, 4);
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

/// An agent named for the node in `[agents]` of config.toml is the one started there: nothing
/// is installed, and the agent running the job is that file.
#[test]
fn agent_given_per_node_in_the_config() {
    let sb = Sandbox::new("ssh-agent-config");
    let opts = NodeOptions::default();
    assert_no_agent_on_path(&opts.path);
    let a = Node::start_with(&sb, "a", opts);
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    // A copy of its own, so the running agent's file tells which command started it.
    let elsewhere = sb.mkdir("opt-mrun").join("mrun-agent");
    std::fs::copy(agent_path(), &elsewhere).expect("copying the agent");
    let config = client.home().join(".config/mrun/config.toml");
    std::fs::create_dir_all(config.parent().expect("a parent")).expect("mkdir .config/mrun");
    std::fs::write(
        &config,
        format!("[agents]\na = \"{}\"\n", elsewhere.display()),
    )
    .expect("writing config.toml");
    let m = SshMrun::new(&sb, &client, RemoteAgent::Unset);

    let mut job = start_hopper(&m, "handle");
    hopper_step(&sb, &mut job, 1);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    hopper_step(&sb, &mut job, 2);
    let agents = a.agent_processes();
    assert!(
        agents.iter().any(
            |&p| std::fs::read_link(format!("/proc/{p}/exe")).ok().as_deref()
                == Some(elsewhere.as_path())
        ),
        "no mrun-agent on node a runs {}: {:?}",
        elsewhere.display(),
        agents
            .iter()
            .map(|&p| std::fs::read_link(format!("/proc/{p}/exe")))
            .collect::<Vec<_>>()
    );
    assert!(
        !a.home().join(".cache/mrun").exists(),
        "an agent was installed although the config names one"
    );
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
}

#[test]
fn agent_installed_on_node_daemon() {
    agent_installed_on_node("ssh-install", Via::Daemon);
}

/// Without the daemon each move probes the node again: the second finds the installed copy.
#[test]
fn agent_installed_on_node_direct() {
    agent_installed_on_node("ssh-install-direct", Via::Direct);
}

// ---------------------------------------------------------------------------------------------
// 7. The job keeps its pid at home, on a and on b.
// ---------------------------------------------------------------------------------------------

fn same_pid_home_a_b_home(name: &str, via: Via) {
    let sb = Sandbox::new(name);
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built).via(via);
    let nodes = [&a, &b];
    let mut job = start_hopper(&m, "handle");
    assert_eq!(assert_at(&job, &nodes, At::Home), job.id as i32);
    hopper_step(&sb, &mut job, 1);
    for (k, node) in ["a", "b", "home", "b", "a", "home"].iter().enumerate() {
        m.mrun.migrate_ok(&job, node);
        let pid = assert_at(&job, &nodes, at_of(node));
        if *node == "home" {
            // Back home it is a restored copy too, in a pid namespace of its own.
            let ns = ns_pids(pid);
            assert!(
                ns.len() >= 2 && ns.last() == Some(&(job.id as i32)),
                "at home: NSpid {ns:?}"
            );
        }
        hopper_step(&sb, &mut job, k as u32 + 2);
    }
    hopper_end(&sb, "exit 0");
    let done = job.finish();
    done.assert_success();
    let id = done_id(&done);
    let steps: Vec<String> = done
        .stdout_text()
        .lines()
        .filter(|l| l.starts_with("STEP "))
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (1..=7)
        .map(|k| format!("STEP {k} PID {id} SYSPID {id} TID {id}"))
        .collect();
    assert_eq!(steps, want, "{}", done.describe());
}

#[test]
fn same_pid_home_a_b_home_daemon() {
    same_pid_home_a_b_home("ssh-getpid", Via::Daemon);
}

#[test]
fn same_pid_home_a_b_home_direct() {
    same_pid_home_a_b_home("ssh-getpid-direct", Via::Direct);
}

// ---------------------------------------------------------------------------------------------
// A filter in the middle of a pipeline, `cat big | mrun FILTER | consumer`: tens of MiB each
// way through the relay, with a fast and with a slow consumer.
// ---------------------------------------------------------------------------------------------

/// The filter: `tr` (one thread, no children) writes as much as it reads, so stdin and stdout
/// are both 40 MiB.
const FILTER: [&str; 2] = ["a-z", "b-za"];

/// A consumer that takes `chunk` bytes at a time with `pause` between reads, on a thread of
/// its own; it returns everything it read once the pipe ends.
fn slow_reader(mut from: File, chunk: usize, pause: Duration) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut all = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(pause);
        }
    })
}

/// `cat big | mrun tr ... | consumer` (40 MiB of text): the input goes in in as many stages as
/// there are hops plus one, and after each stage the job moves on along `hops` (each stage's
/// writes return once the job took all but a pipe's worth, so it runs and reads at every
/// move); then stdin closes. While away, input and output pass through the relay in both
/// directions at once, each far larger than any buffer on the way. The job stays listed by
/// `mrunctl status` while its output backs up, and the output is byte for byte the
/// uninterrupted run's.
fn pipeline_across_hops(name: &str, hops: &[&str], slow: bool) {
    let sb = Sandbox::new(name);
    let (a, b, client) = two_nodes(&sb);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let input = text_file(40 * MIB);
    let data = read(&input);
    let tr = Path::new("/usr/bin/tr");
    let want = reference(name, tr, &FILTER, &[], Input::File(input.clone()));

    let (read_end, mut write_end) = pipe();
    let (stdout, consumer) = if slow {
        let (from, to) = pipe();
        (
            Output::Stdio(to.into()),
            Some(slow_reader(from, 16 * 1024, Duration::from_millis(1))),
        )
    } else {
        (Output::Pipe, None)
    };
    let mut job = m.start(name, tr, &FILTER, Input::Stdio(read_end.into()), stdout);
    let stage = data.len() / (hops.len() + 1);
    for (k, hop) in hops.iter().enumerate() {
        let part = &data[k * stage..(k + 1) * stage];
        feed(&mut job, &mut write_end, part, &format!("stage {k}"));
        m.mrun.migrate_ok(&job, hop);
        assert_at(&job, &[&a, &b], at_of(hop));
        let status = m.mrun.mrunctl(&["status"]);
        assert!(
            status.stdout_text().contains(&job.id.to_string()),
            "{name}: mrunctl status does not list job {} on {hop}: {}",
            job.id,
            status.describe()
        );
    }
    feed(
        &mut job,
        &mut write_end,
        &data[hops.len() * stage..],
        "the last stage",
    );
    drop(write_end);
    let done = job.finish();
    done.assert_quiet_success(name);
    let got = match consumer {
        Some(reader) => reader.join().expect("the slow reader panicked"),
        None => done.stdout,
    };
    assert_same_bytes(name, &got, &want);
}

/// `cat 40MiB | mrun tr | test`, home -> a -> b -> home while input flows.
#[test]
fn pipeline_40mib_each_way_home_a_b_home() {
    pipeline_across_hops("ssh-pipeline", &["a", "b", "home"], false);
}

/// The same with a consumer that reads 16 KiB a millisecond: the job's output backs up all the
/// way to the node while input keeps coming, and moves still go through.
#[test]
fn pipeline_40mib_slow_consumer_home_a_b_home() {
    pipeline_across_hops("ssh-pipeline-slow", &["a", "b", "home"], true);
}
