//! Issue 12: nodes without a shared filesystem. Every job here works in a data directory
//! (`sb/work`, made by the test and holding the inputs) that the nodes do not see: node `a` has
//! an empty tmpfs there (`NodeFiles::Hidden`), node `b` has other bytes under the same names
//! (`NodeFiles::Different`, a copy taken when the node starts, with home's modes and times),
//! and for the working-directory test neither node has the directory at all
//! (`NodeFiles::Missing`). See `common/node_files.rs`; `node_files.rs` checks that harness.
//!
//! What must hold (the issue's acceptance):
//! - real programs moved home -> a -> b -> home while they run, each move after the job used
//!   another slice of the CPU time its uninterrupted run took (or, for the Python script, while
//!   it waits on a control file between phases), leave at home exactly what the same command
//!   left when the test ran it at home first in a copy of the directory: every file's bytes,
//!   mode and (where the program set or kept it) modification time, nothing more, nothing
//!   less; and they print the same;
//! - a job whose working directory exists only at home keeps `pwd` and relative paths;
//! - a node that dies while the job writes a file: `mrun` exits 255 saying it lost the
//!   connection, the file at home holds every line the job had fsynced, as written, and
//!   nothing else in the directory changed;
//! - a job holding a FIFO or a unix socket of the directory cannot move to a node that does
//!   not see it: `mrunctl migrate` exits 3 with one line naming the file, the job goes on at
//!   home untouched.
//!
//! Until mrun serves home's files to such nodes these tests fail, each saying which move or
//! which check failed and what the node sees. `MRUN_TESTS_NODE_FILES=shared` gives every node
//! home's files instead: a check of the tests' own steps against today's mrun (the refusals
//! then fail, as a node that sees the files has nothing to refuse).
//!
//! Runs as root (sshd logs the user in; the nodes mount tmpfs in their own namespaces). Build
//! first: `cargo build --release --workspace`.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::hash::Hasher;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

// ---------------------------------------------------------------------------------------------
// The nodes and the jobs
// ---------------------------------------------------------------------------------------------

/// Nodes `a` (and `b`) with the given views of home's files, a client home that may log in to
/// them, and `mrun` set up to reach them.
struct Cluster<'a> {
    nodes: Vec<Node>,
    client: ClientHome,
    m: SshMrun<'a>,
}

/// The usual pair: `a` does not see `work`, `b` has other bytes there.
fn hidden_and_different<'a>(sb: &'a Sandbox, work: &Path) -> Cluster<'a> {
    Cluster::up(
        sb,
        &[
            ("a", NodeFiles::Hidden(vec![work.to_path_buf()])),
            ("b", NodeFiles::Different(vec![work.to_path_buf()])),
        ],
    )
}

impl<'a> Cluster<'a> {
    /// Starts the nodes (after the test filled the data directory: a `Different` node copies
    /// it now), and the home daemon connected to each, so that no move pays for connecting.
    fn up(sb: &'a Sandbox, views: &[(&str, NodeFiles)]) -> Cluster<'a> {
        let nodes: Vec<Node> = views
            .iter()
            .map(|(name, files)| {
                Node::start_with(
                    sb,
                    name,
                    NodeOptions {
                        files: files.effective(),
                        ..NodeOptions::default()
                    },
                )
            })
            .collect();
        let pairs: Vec<(&str, &Node)> = nodes.iter().map(|n| (n.name(), n)).collect();
        let client = ClientHome::for_nodes(sb, &pairs);
        // Moves only when the test asks: the daemon learns the nodes below, and its balancer
        // could otherwise move a job onto them.
        let m = SshMrun::new(sb, &client, RemoteAgent::Built).env("MRUN_BALANCE", "off");
        let c = Cluster { nodes, client, m };
        c.warm_up();
        c
    }

    fn refs(&self) -> Vec<&Node> {
        self.nodes.iter().collect()
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// `mrunctl nodes --nodes a,b` as this client: starts the home daemon (balancing off, the
    /// built agent) and its SSH connection to each node.
    fn warm_up(&self) {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name()).collect();
        let list = names.join(",");
        let mut cmd = self
            .m
            .mrun
            .mrunctl_command(&["nodes", "--nodes", list.as_str()]);
        cmd.env("HOME", self.client.home())
            .env("MRUN_REMOTE_AGENT", agent_path())
            .env("MRUN_BALANCE", "off")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("MRUN_NODES")
            .env_remove("MRUN_NO_DAEMON")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_AGENT_PID");
        let done = Proc::spawn("mrunctl nodes", cmd, Input::Null, Output::Pipe).finish();
        done.assert_success();
    }

    /// Starts `mrun PROGRAM ARGS...` with its working directory in `cwd` (and `envs`), and
    /// waits until the job can be moved.
    fn start<S: AsRef<OsStr>>(
        &self,
        label: &str,
        cwd: &Path,
        program: impl AsRef<OsStr>,
        args: &[S],
        envs: &[(&str, &str)],
        stdout: Output,
    ) -> Job {
        let mut cmd = self.m.command(program, args);
        cmd.current_dir(cwd);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.m.mrun.spawn_job(label, cmd, Input::Null, stdout)
    }

    /// What `node` sees, in words.
    fn sees(&self, node: &str) -> String {
        match self.nodes.iter().find(|n| n.name() == node) {
            Some(n) => n.files().describe(node),
            None => "home sees its own files".into(),
        }
    }

    /// `mrunctl migrate JOB NODE`; fails the test, saying what the node sees, unless it worked
    /// (exit 0, the one expected line), then checks the job runs there.
    fn move_to(&self, job: &Job, node: &str) {
        let out = self.m.migrate_within(job, node, TIMEOUT);
        let want = if node == "home" {
            format!("job {} is back home\n", job.id)
        } else {
            format!("job {} now runs on {node}\n", job.id)
        };
        if !(out.status.success() && out.stdout_text() == want && out.stderr.is_empty()) {
            panic!(
                "{}: the move to {node} failed, and {}; issue 12 wants the job to keep working \
                 on home's files there.\n{}\n--- the job's mrun, stderr so far ---\n{}",
                job.label,
                self.sees(node),
                out.describe(),
                job.mrun.stderr_text()
            );
        }
        assert_at(job, &self.refs(), at_of(node));
    }

    /// Moves the job home -> a -> b -> home, each move once the job has used another `step`
    /// of CPU time where it runs, so that every move comes mid-run with work left.
    fn hops_by_cpu(&self, job: &mut Job, step: Duration) {
        for node in ["a", "b", "home"] {
            let (root, at) = locate(job, &self.refs());
            let mut used = Duration::ZERO;
            let busy = wait_until(TIMEOUT, || {
                used = cpu_here(root);
                used >= step || job.mrun.try_status().is_some()
            });
            assert!(
                busy && job.mrun.try_status().is_none(),
                "{}: the job ended (or never used {step:?} of CPU at {at:?}: {used:?}) before \
                 the move to {node}: it is too short for three moves; mrun: {:?}, its stderr: \
                 {}",
                job.label,
                job.mrun.try_status(),
                job.mrun.stderr_text()
            );
            self.move_to(job, node);
            eprintln!(
                "{}: moved to {node} after {used:?} of CPU at {at:?}",
                job.label
            );
        }
    }
}

fn at_of(node: &str) -> At {
    if node == "home" {
        At::Home
    } else {
        At::Node(node.to_string())
    }
}

/// CPU time (user + system) the job has used where it runs now: its root process (every
/// thread, and the children it waited for) and its live descendants. A restored job starts
/// from zero, so on a node this counts from the job's arrival.
fn cpu_here(root: i32) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |pid: i32| -> u64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0;
        };
        let Some(close) = stat.rfind(')') else {
            return 0;
        };
        // After the comm: state is field 3; utime, stime, cutime, cstime are fields 14-17.
        stat[close + 1..]
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    };
    let total: u64 = std::iter::once(root)
        .chain(descendants(root))
        .map(ticks)
        .sum();
    Duration::from_secs_f64(total as f64 / hz)
}

// ---------------------------------------------------------------------------------------------
// Files, trees and reference runs
// ---------------------------------------------------------------------------------------------

/// The time every input is given: long before any run, so a file that still has it afterwards
/// was left alone or had its time set on purpose (gzip copies it to its output).
fn old_time() -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
}

fn put(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(old_time()))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
}

/// Files every data directory holds besides a test's inputs, which no job touches.
fn bystanders(work: &Path) {
    put(&work.join("notes.md"), b"nothing to see here\n");
    put(&work.join("keep/data.bin"), &[7u8; 5000]);
}

/// `cp -a SRC DST`: the reference run's copy of the data directory (modes and times kept).
fn copy_tree(src: &Path, dst: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap_or_else(|e| panic!("cp -a: {e}"));
    assert!(ok.success(), "cp -a {} {}", src.display(), dst.display());
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// 'f' regular file, 'd' directory, 'l' symlink, 'p' FIFO, 's' socket, '?' other.
    kind: char,
    mode: u32,
    len: u64,
    /// Modification time, ns since the epoch.
    mtime: i128,
    /// Of the bytes (or the link target).
    digest: u64,
}

/// Every entry below `root`, by relative path.
type Tree = BTreeMap<PathBuf, Entry>;

fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten();
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|err| panic!("lstat {}: {err}", p.display()));
            let ft = m.file_type();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let kind = if ft.is_dir() {
                walk(root, &p, out);
                'd'
            } else if ft.is_file() {
                h.write(&read(&p));
                'f'
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                h.write(t.as_os_str().as_encoded_bytes());
                'l'
            } else {
                use std::os::unix::fs::FileTypeExt;
                if ft.is_fifo() {
                    'p'
                } else if ft.is_socket() {
                    's'
                } else {
                    '?'
                }
            };
            let rel = p.strip_prefix(root).expect("below the root").to_path_buf();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    len: if kind == 'd' { 0 } else { m.len() },
                    mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                    digest: h.finish(),
                },
            );
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

fn old_ns() -> i128 {
    old_time()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as i128
}

/// The job left in `work` what the reference run left in `reference`: the same names, kinds,
/// modes and bytes; and every file the reference left with an old time (untouched, or given
/// that time by the program) has it in `work` too.
fn assert_like_reference(label: &str, work: &Path, reference: &Path) {
    let (got, want) = (tree(work), tree(reference));
    let names = |t: &Tree| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&got),
        names(&want),
        "{label}: {} holds other names than after the uninterrupted run in {}",
        work.display(),
        reference.display()
    );
    for (rel, w) in &want {
        let g = &got[rel];
        assert_eq!(
            (g.kind, g.mode, g.len),
            (w.kind, w.mode, w.len),
            "{label}: {} (kind, mode, length) differs from the uninterrupted run's",
            rel.display()
        );
        if w.kind == 'f' && g.digest != w.digest {
            let (a, b) = (read(&work.join(rel)), read(&reference.join(rel)));
            assert_same_bytes(&format!("{label}: {}", rel.display()), &a, &b);
        }
        if w.kind == 'f' && w.mtime == old_ns() {
            assert_eq!(
                g.mtime,
                w.mtime,
                "{label}: {} has another modification time than after the uninterrupted run",
                rel.display()
            );
        }
    }
}

/// Each of `names` is in `after` exactly as in `before` (bytes, mode, time).
fn assert_untouched(label: &str, before: &Tree, after: &Tree, names: &[&str]) {
    for n in names {
        let rel = Path::new(n);
        assert_eq!(
            after.get(rel),
            before.get(rel),
            "{label}: {n} changed in the data directory"
        );
    }
}

/// Runs `sh -c '"$@"; times' sh PROGRAM ARGS...` in `dir` at home, uninterrupted: the run the
/// job is compared with. Returns how it ended (stdout as `stdout` says) and the CPU time it used
/// (its children's user + system time, as sh's `times` reports it on the last line of stderr).
fn reference_run<S: AsRef<OsStr>>(
    label: &str,
    dir: &Path,
    program: impl AsRef<OsStr>,
    args: &[S],
    envs: &[(&str, &str)],
    stdout: Output,
) -> (Finished, Duration) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#""$@"; s=$?; times >&2; exit $s"#)
        .arg("sh")
        .arg(program)
        .args(args)
        .current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let done = Proc::spawn(format!("{label} (uninterrupted)"), cmd, Input::Null, stdout).finish();
    done.assert_success();
    let err = done.stderr_text();
    let last = err.lines().last().unwrap_or_default();
    let secs = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let cpu: Option<f64> = last.split_whitespace().map(secs).sum();
    let cpu = cpu.unwrap_or_else(|| panic!("{label}: no `times` line on stderr: {err:?}"));
    eprintln!("{label}: the uninterrupted run used {cpu:.2} s of CPU");
    (done, Duration::from_secs_f64(cpu))
}

/// How much CPU time each of the three moves waits for: an eighth of the uninterrupted run's,
/// so that the last move comes with well over half the work left (moves also cost the job
/// some running time while the node is prepared).
fn hop_step(cpu: Duration) -> Duration {
    cpu / 8
}

// ---------------------------------------------------------------------------------------------
// 1. Real programs moved home -> a -> b -> home on home's files
// ---------------------------------------------------------------------------------------------

/// `gzip -9 big.txt`: writes `big.txt.gz` next to it at home and removes `big.txt`. The .gz
/// must be the bytes of `gzip -9 -c` of a copy with the same name and time, with big.txt's
/// mode and time (gzip copies them).
#[test]
fn gzip_in_place_home_a_b_home() {
    let sb = Sandbox::new("files-gzip");
    let work = sb.mkdir("work");
    put(&work.join("big.txt"), &read(&text_file(64 * MIB)));
    bystanders(&work);
    let before = tree(&work);
    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let (want, cpu) = reference_run(
        "gzip -9 -c big.txt",
        &reference,
        "gzip",
        &["-9", "-c", "big.txt"],
        &[],
        Output::Pipe,
    );

    let c = hidden_and_different(&sb, &work);
    let label = "gzip -9 big.txt";
    let mut job = c.start(label, &work, "gzip", &["-9", "big.txt"], &[], Output::Pipe);
    c.hops_by_cpu(&mut job, hop_step(cpu));
    let done = job.finish();
    done.assert_quiet_success(label);
    assert!(done.stdout.is_empty(), "{}", done.describe());

    let after = tree(&work);
    assert!(
        !work.join("big.txt").exists(),
        "{label}: big.txt is still there at home"
    );
    let gz = work.join("big.txt.gz");
    assert!(gz.is_file(), "{label}: no big.txt.gz at home");
    assert_same_bytes(label, &read(&gz), &want.stdout);
    let (g, b) = (
        &after[Path::new("big.txt.gz")],
        &before[Path::new("big.txt")],
    );
    assert_eq!(
        (g.mode, g.mtime),
        (b.mode, b.mtime),
        "{label}: big.txt.gz did not get big.txt's mode and time"
    );
    let mut names: Vec<_> = after.keys().cloned().collect();
    names.retain(|n| n != Path::new("big.txt.gz"));
    let mut were: Vec<_> = before.keys().cloned().collect();
    were.retain(|n| n != Path::new("big.txt"));
    assert_eq!(names, were, "{label}: other files came or went");
    assert_untouched(label, &before, &after, &["notes.md", "keep/data.bin"]);
}

/// `sort -o out in` (sort's threads at work: `--parallel=2` and keys, as in the threads
/// tests), over an `out` that holds something else beforehand.
#[test]
fn sort_to_file_home_a_b_home() {
    let sb = Sandbox::new("files-sort");
    let work = sb.mkdir("work");
    put(&work.join("in"), &read(&text_file(64 * MIB)));
    put(&work.join("out"), b"what out held before the run\n");
    bystanders(&work);
    let before = tree(&work);
    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let mut args: Vec<&str> = SORT_THREADED_ARGS.to_vec();
    args.extend(["-o", "out", "in"]);
    let envs = [("LC_ALL", "C")];
    let label = "sort -o out in";
    let (_, cpu) = reference_run(label, &reference, "sort", &args, &envs, Output::Pipe);

    let c = hidden_and_different(&sb, &work);
    // The moves are paced by the job's CPU time, and with pre-copy its two threads run on
    // at home while its memory goes ahead: it could finish before its third move. The other
    // tests here move with pre-copy.
    let envs = [("LC_ALL", "C"), ("MRUN_PRECOPY", "0")];
    let mut job = c.start(label, &work, "sort", &args, &envs, Output::Pipe);
    c.hops_by_cpu(&mut job, hop_step(cpu));
    job.finish().assert_quiet_success(label);
    assert_like_reference(label, &work, &reference);
    assert_untouched(label, &before, &tree(&work), &["in", "notes.md"]);
}

/// `xz -T2 -c in > out` typed at home: the shell at home opens `out`, mrun's (and the job's)
/// stdout; the job reads `in` by path.
#[test]
fn xz_two_threads_to_stdout_file_home_a_b_home() {
    let sb = Sandbox::new("files-xz");
    let work = sb.mkdir("work");
    put(&work.join("in"), &read(&text_file(8 * MIB)));
    bystanders(&work);
    let before = tree(&work);
    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let mut args: Vec<&str> = XZ_T2_ARGS.to_vec();
    args.push("in");
    let label = "xz -T2 -c in > out";
    let (_, cpu) = reference_run(
        label,
        &reference,
        "xz",
        &args,
        &[],
        Output::File(reference.join("out")),
    );

    // `out` exists before the nodes start, so that node b has its own (other) `out` too.
    put(&work.join("out"), b"");
    let c = hidden_and_different(&sb, &work);
    let mut job = c.start(
        label,
        &work,
        "xz",
        &args,
        &[],
        Output::File(work.join("out")),
    );
    c.hops_by_cpu(&mut job, hop_step(cpu));
    job.finish().assert_quiet_success(label);
    assert_like_reference(label, &work, &reference);
    assert_untouched(label, &before, &tree(&work), &["in", "notes.md"]);
}

/// The same with the redirection inside the job (`sh -c 'exec xz ... in > out'`): `out` is a
/// file the job opened itself, at home, and writes away from home.
#[test]
fn xz_two_threads_job_opens_out_home_a_b_home() {
    let sb = Sandbox::new("files-xz-inner");
    let work = sb.mkdir("work");
    put(&work.join("in"), &read(&text_file(8 * MIB)));
    bystanders(&work);
    let before = tree(&work);
    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let script = format!("exec xz {} in > out", XZ_T2_ARGS.join(" "));
    let args = ["-c", script.as_str()];
    let label = "sh -c 'exec xz -T2 -c in > out'";
    let (_, cpu) = reference_run(label, &reference, "sh", &args, &[], Output::Pipe);

    let c = hidden_and_different(&sb, &work);
    let mut job = c.start(label, &work, "sh", &args, &[], Output::Pipe);
    c.hops_by_cpu(&mut job, hop_step(cpu));
    job.finish().assert_quiet_success(label);
    assert_like_reference(label, &work, &reference);
    assert_untouched(label, &before, &tree(&work), &["in", "notes.md"]);
}

/// Reads `SRC` line by line and appends a line of results per line to `DST` (opened with
/// "a"), flushing each; after the lines given in STOPS it says "PAUSE k" and waits for
/// CTL/go-k. Prints how many lines it did.
const PYTHON_APPEND: &str = r#"
import hashlib, os, sys, time
src, dst, ctl = sys.argv[1], sys.argv[2], sys.argv[3]
stops = [int(s) for s in sys.argv[4].split(",")]
n = 0
with open(src, encoding="utf-8") as f, open(dst, "a", encoding="utf-8") as out:
    for line in f:
        n += 1
        digest = hashlib.sha256(line.encode()).hexdigest()[:16]
        out.write(f"{n} {len(line.split())} {len(line)} {digest}\n")
        out.flush()
        if n in stops:
            k = stops.index(n) + 1
            print(f"PAUSE {k} after line {n}", flush=True)
            while not os.path.exists(f"{ctl}/go-{k}"):
                time.sleep(0.01)
            print(f"GO {k}", flush=True)
print(f"DONE {n} lines", flush=True)
"#;

/// The Python script moved home -> a -> b -> home while it waits between phases: its results
/// (appended to a file that already held a line) and its output are the uninterrupted run's,
/// and what it wrote on a node is at home once it has left that node.
#[test]
fn python_appends_results_home_a_b_home() {
    let sb = Sandbox::new("files-python");
    let work = sb.mkdir("work");
    let input = read(&text_file(4 * MIB));
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    put(&work.join("input.txt"), &input);
    let header = "results of an earlier run\n";
    put(&work.join("results.txt"), header.as_bytes());
    bystanders(&work);
    let before = tree(&work);
    let stops = [lines / 4, lines / 2, lines * 3 / 4];
    let stops_arg = stops.map(|s| s.to_string()).join(",");

    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let go_ref = sb.mkdir("ctl-reference");
    for k in 1..=3 {
        put(&go_ref.join(format!("go-{k}")), b"");
    }
    let args_for = |ctl: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "-c".into(),
            PYTHON_APPEND.into(),
            "input.txt".into(),
            "results.txt".into(),
            ctl.into(),
            stops_arg.clone().into(),
        ]
    };
    let label = "python3 appends results";
    let (want, _) = reference_run(
        label,
        &reference,
        python3(),
        &args_for(&go_ref),
        &[],
        Output::Pipe,
    );
    let results = read(&reference.join("results.txt"));
    // What results.txt holds after line n: the header and the first n result lines.
    let prefix = |n: usize| -> &[u8] {
        let mut end = header.len();
        for _ in 0..n {
            end += results[end..]
                .iter()
                .position(|&b| b == b'\n')
                .expect("a result line")
                + 1;
        }
        &results[..end]
    };

    let c = hidden_and_different(&sb, &work);
    let ctl = sb.mkdir("ctl");
    let mut job = c.start(label, &work, python3(), &args_for(&ctl), &[], Output::Pipe);
    for (k, node) in [(1, "a"), (2, "b"), (3, "home")] {
        let n = stops[k - 1];
        job.mrun
            .wait_for_stdout(&format!("PAUSE {k} after line {n}\n"));
        c.move_to(&job, node);
        if k > 1 {
            // Everything written on the node it left is at home now.
            let path = work.join("results.txt");
            let mut got = Vec::new();
            let landed = wait_until(TIMEOUT, || {
                got = std::fs::read(&path).unwrap_or_default();
                got == prefix(n)
            });
            if !landed {
                assert_same_bytes(
                    &format!(
                        "{label}: results.txt at home after the job, paused after line {n}, \
                         left node {}",
                        ["a", "b"][k - 2]
                    ),
                    &got,
                    prefix(n),
                );
            }
        }
        write_atomically(&ctl.join(format!("go-{k}")), "");
        job.mrun.wait_for_stdout(&format!("GO {k}\n"));
    }
    let done = job.finish();
    done.assert_quiet_success(label);
    assert_same_bytes(label, &done.stdout, &want.stdout);
    assert_like_reference(label, &work, &reference);
    assert_untouched(label, &before, &tree(&work), &["input.txt", "notes.md"]);
}

/// `sh -c 'for f in *.txt; do gzip -9 "$f"; done'`: a shell compressing eight files one after
/// another (a new gzip each time, started wherever the shell is), moved as a tree.
#[test]
fn shell_loop_compresses_files_home_a_b_home() {
    let sb = Sandbox::new("files-loop");
    let work = sb.mkdir("work");
    let text = read(&text_file(64 * MIB));
    for (i, part) in text.chunks(8 * MIB).enumerate() {
        put(&work.join(format!("part-{}.txt", i + 1)), part);
    }
    bystanders(&work);
    let before = tree(&work);
    let reference = sb.path("reference");
    copy_tree(&work, &reference);
    let args = ["-c", r#"for f in *.txt; do gzip -9 "$f"; done"#];
    let label = "sh: for f in *.txt; do gzip -9 $f; done";
    let (_, cpu) = reference_run(label, &reference, "sh", &args, &[], Output::Pipe);

    let c = hidden_and_different(&sb, &work);
    let mut job = c.start(label, &work, "sh", &args, &[], Output::Pipe);
    c.hops_by_cpu(&mut job, hop_step(cpu));
    job.finish().assert_quiet_success(label);
    assert_like_reference(label, &work, &reference);
    assert_untouched(label, &before, &tree(&work), &["notes.md", "keep/data.bin"]);
}

// ---------------------------------------------------------------------------------------------
// 2. A working directory that exists only at home
// ---------------------------------------------------------------------------------------------

/// Prints where it is and what is there (`pwd` of the shell and of /bin/pwd, `ls`, a file by a
/// relative path, a `cd` into a subdirectory), then three times: "WAIT k", wait for CTL/go-k,
/// and the same again. It waits in one long `sleep` (which the test ends with SIGPIPE, of
/// which sh says nothing) rather than polling with short ones: a member of the job that exits
/// while mrun freezes the tree fails the move ("pid N ended during the freeze").
const WHERE_AM_I: &str = r#"
ctl=$1
look() {
    echo "== $1"
    pwd
    /bin/pwd
    ls -A
    ls -A ..
    cat rel/file
    wc -c < rel/file
    (cd rel && /bin/pwd && cat ./file)
    find . | LC_ALL=C sort
}
look 0
for k in 1 2 3; do
    echo "WAIT $k"
    while [ ! -e "$ctl/go-$k" ]; do sleep 1000; done
    look "$k"
done
"#;

/// The job's working directory does not exist on either node: moved home -> a -> b -> home
/// while it waits, it prints exactly what it prints at home.
#[test]
fn working_directory_only_at_home_home_a_b_home() {
    working_directory_home_a_b_home("files-cwd", |work| {
        vec![
            ("a", NodeFiles::Missing(vec![work.to_path_buf()])),
            ("b", NodeFiles::Missing(vec![work.to_path_buf()])),
        ]
    });
}

/// The same where the working directory exists on the nodes but is not home's: empty on a,
/// other bytes under the same names on b. The job holds no file of it open, only its working
/// directory: what it reads there by relative paths must still be home's.
#[test]
fn working_directory_hidden_or_different_home_a_b_home() {
    working_directory_home_a_b_home("files-cwd-other", |work| {
        vec![
            ("a", NodeFiles::Hidden(vec![work.to_path_buf()])),
            ("b", NodeFiles::Different(vec![work.to_path_buf()])),
        ]
    });
}

fn working_directory_home_a_b_home(name: &str, views: fn(&Path) -> Vec<(&'static str, NodeFiles)>) {
    let sb = Sandbox::new(name);
    let work = sb.mkdir("nest/work");
    put(&work.join("rel/file"), b"read by a relative path\n");
    put(&work.join("other.txt"), b"another file\n");
    let before = tree(&work);
    let go_ref = sb.mkdir("ctl-reference");
    for k in 1..=3 {
        put(&go_ref.join(format!("go-{k}")), b"");
    }
    let label = "sh: pwd and relative paths";
    let script_args = |ctl: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "-c".into(),
            WHERE_AM_I.into(),
            "sh".into(),
            ctl.as_os_str().into(),
        ]
    };
    // In the same directory as the job: pwd is part of the output.
    let (want, _) = reference_run(label, &work, "sh", &script_args(&go_ref), &[], Output::Pipe);
    assert_eq!(
        tree(&work),
        before,
        "the reference run changed {}",
        work.display()
    );

    let c = Cluster::up(&sb, &views(&work));
    let ctl = sb.mkdir("ctl");
    let mut job = c.start(label, &work, "sh", &script_args(&ctl), &[], Output::Pipe);
    for (k, node) in [(1, "a"), (2, "b"), (3, "home")] {
        job.mrun.wait_for_stdout(&format!("WAIT {k}\n"));
        job_sleep(&job, &c.refs());
        c.move_to(&job, node);
        write_atomically(&ctl.join(format!("go-{k}")), "");
        let sleep = job_sleep(&job, &c.refs());
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe { libc::kill(sleep, libc::SIGPIPE) };
        if k < 3 {
            job.mrun.wait_for_stdout(&format!("WAIT {}\n", k + 1));
        }
    }
    let done = job.finish();
    assert_eq!(
        done.stdout_text(),
        want.stdout_text(),
        "{label}: the output differs from the run at home; {}; {}; mrun's stderr: {}",
        c.sees("a"),
        c.sees("b"),
        done.stderr_text()
    );
    done.assert_quiet_success(label);
    assert_eq!(tree(&work), before, "{label}: {} changed", work.display());
}

/// The `sleep` the job waits in (its pid here), wherever the job runs.
fn job_sleep(job: &Job, nodes: &[&Node]) -> i32 {
    let mut found = None;
    let ok = wait_until(TIMEOUT, || {
        let (root, _) = locate(job, nodes);
        found = descendants(root).into_iter().find(|&p| {
            status_field(p, "Name").as_deref() == Some("sleep")
                && matches!(process_state(p), Some('S') | Some('R'))
                && tracer_pid(p) == Some(0)
        });
        found.is_some()
    });
    assert!(ok, "{}: no sleep in the job while it waits", job.label);
    found.unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// 3. The node dies while the job writes a file at home
// ---------------------------------------------------------------------------------------------

/// Writes "line K: ..." lines to journal.txt, fsyncs each, then prints "SYNCED K".
const PYTHON_JOURNAL: &str = r#"
import os, time
f = open("journal.txt", "w")
for k in range(1, 100000):
    f.write(f"line {k}: " + "abcdefghij" * (k % 7) + "\n")
    f.flush()
    os.fsync(f.fileno())
    print(f"SYNCED {k}", flush=True)
    time.sleep(0.02)
"#;

/// What journal.txt holds after `n` lines.
fn journal(n: usize) -> String {
    (1..=n)
        .map(|k| format!("line {k}: {}\n", "abcdefghij".repeat(k % 7)))
        .collect()
}

/// The highest K of the "SYNCED K" lines in `text`.
fn last_synced(text: &str) -> usize {
    text.lines()
        .filter_map(|l| l.strip_prefix("SYNCED ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The job writes and fsyncs lines to a file of the data directory; once it has synced lines
/// on node a (which does not see the directory), the node's sshd is killed: mrun exits 255
/// saying it lost the connection, journal.txt at home holds at least every synced line, exactly
/// as written (a prefix of what the job writes), and nothing else in the directory changed.
#[test]
fn node_dies_while_the_job_writes_home_file() {
    let sb = Sandbox::new("files-node-dies");
    let work = sb.mkdir("work");
    bystanders(&work);
    let before = tree(&work);
    let mut c = Cluster::up(&sb, &[("a", NodeFiles::Hidden(vec![work.clone()]))]);
    let label = "python3 writes journal.txt with fsync";
    let mut job = c.start(
        label,
        &work,
        python3(),
        &["-c", PYTHON_JOURNAL],
        &[],
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("SYNCED 5\n");
    c.move_to(&job, "a");
    let (job_pid, _) = locate(&job, &c.refs());
    // Lines synced on a: a few more than had come out when the move ended.
    let moved_at = last_synced(&job.mrun.stdout_text());
    job.mrun
        .wait_for_stdout(&format!("SYNCED {}\n", moved_at + 3));
    let synced = last_synced(&job.mrun.stdout_text());
    let killed = c.node("a").kill_sshd();
    assert!(
        !killed.is_empty(),
        "no sshd session below node a's listener"
    );

    let status = job.mrun.wait();
    wait_until(TIMEOUT, || {
        job.mrun.stderr_text().contains("lost the connection")
    });
    let stderr = job.mrun.stderr_text();
    assert_eq!(
        status.code(),
        Some(255),
        "{label}: mrun ended with {status}; stderr: {stderr}"
    );
    assert!(
        stderr.contains("lost the connection") && stderr.lines().count() == 1,
        "{label}: mrun should say in one line that it lost the connection: {stderr:?}"
    );
    drop(job);

    let got = std::fs::read_to_string(work.join("journal.txt")).unwrap_or_else(|e| {
        panic!("{label}: journal.txt at home: {e} (the job synced {synced} lines)")
    });
    let whole = journal(synced + 200);
    assert!(
        whole.starts_with(&got),
        "{label}: journal.txt at home is not what the job wrote: {} bytes, first difference at \
         byte {}",
        got.len(),
        got.bytes()
            .zip(whole.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(got.len())
    );
    assert!(
        got.len() >= journal(synced).len(),
        "{label}: the job had synced {synced} lines ({synced} was printed after its fsync \
         returned on node a), but journal.txt at home holds {} lines ({} bytes)",
        got.lines().count(),
        got.len()
    );
    eprintln!(
        "{label}: {synced} lines synced when node a died; {} at home",
        got.lines().count()
    );
    let mut after = tree(&work);
    after.remove(Path::new("journal.txt"));
    assert_eq!(
        after, before,
        "{label}: something else changed in the data directory"
    );

    let a = c.node("a");
    let mut left = Vec::new();
    let gone = wait_until(TIMEOUT, || {
        left = a.surviving_leftovers();
        left.is_empty() && matches!(process_state(job_pid), None | Some('Z') | Some('X'))
    });
    assert!(
        gone,
        "{label}: after node a died, its sessions' processes still run: {left:?} (the job \
         copy was pid {job_pid}, state {:?})",
        process_state(job_pid)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. What cannot be served is refused, and the job stays home untouched
// ---------------------------------------------------------------------------------------------

/// Makes the FIFO `pipe.fifo` in its working directory, holds it open O_RDWR with a line in it,
/// says READY, and once CTL/end exists reads the line back and says END.
const PYTHON_FIFO: &str = r#"
import os, sys, time
ctl = sys.argv[1]
os.mkfifo("pipe.fifo")
fd = os.open("pipe.fifo", os.O_RDWR)
os.write(fd, b"through the fifo\n")
print("READY", flush=True)
while not os.path.exists(ctl + "/end"):
    time.sleep(0.01)
print(os.read(fd, 100).decode(), end="")
print("END", flush=True)
"#;

/// Listens on the unix socket `app.sock` in its working directory, connects to itself and
/// sends a line, says READY, and once CTL/end exists receives the line and says END.
const PYTHON_SOCKET: &str = r#"
import os, socket, sys, time
ctl = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("app.sock")
server.listen(4)
client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("app.sock")
conn, _ = server.accept()
client.sendall(b"through the socket\n")
print("READY", flush=True)
while not os.path.exists(ctl + "/end"):
    time.sleep(0.01)
print(conn.recv(100).decode(), end="")
print("END", flush=True)
"#;

/// The job holds `file` (made in the data directory) that node a, which does not see the
/// directory, cannot be given: `mrunctl migrate JOB a` exits 3 (refused) with one line naming
/// the file's path, nothing on stdout; the job is still the original process at home, the only
/// copy of itself, nothing left on the node; it finishes with the right output.
fn refused_for(
    name: &str,
    label: &str,
    script: &str,
    file: &str,
    a_files: fn(PathBuf) -> NodeFiles,
) {
    let sb = Sandbox::new(name);
    let work = sb.mkdir("work");
    bystanders(&work);
    let c = Cluster::up(&sb, &[("a", a_files(work.clone()))]);
    let ctl = sb.mkdir("ctl");
    let mut job = c.start(
        label,
        &work,
        python3(),
        &[OsStr::new("-c"), OsStr::new(script), ctl.as_os_str()],
        &[],
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    let path = work.join(file);
    // The daemon's watch of node a has an agent there of its own, which stays.
    let watching = c.nodes[0].agent_processes();
    let out = c.m.migrate_within(&job, "a", Duration::from_secs(30));
    let line = out.stderr_text();
    assert!(
        out.status.code() == Some(3)
            && out.stdout.is_empty()
            && line.lines().count() == 1
            && line.contains(&path.display().to_string())
            && !line.contains("panicked"),
        "{label}: moving to a node that {} should be refused: exit 3 and one line naming {}; \
         got {}",
        c.sees("a").trim_start_matches("node a "),
        path.display(),
        out.describe()
    );
    eprintln!("{label}: {}", line.trim());

    let (pid, at) = locate(&job, &c.refs());
    assert_eq!(
        (pid, at),
        (job.id as i32, At::Home),
        "{label}: the job is not the original at home"
    );
    assert!(
        matches!(process_state(pid), Some('R') | Some('S')) && tracer_pid(pid) == Some(0),
        "{label}: the job was left in state {:?}, traced by {:?}",
        process_state(pid),
        tracer_pid(pid)
    );
    let mut agents = Vec::new();
    let gone = wait_until(TIMEOUT, || {
        agents = c.nodes[0].agent_processes();
        agents.retain(|p| !watching.contains(p));
        agents.is_empty()
    });
    assert!(
        gone,
        "{label}: mrun-agent left running on node a: {agents:?} (besides the daemon's watch: \
         {watching:?})"
    );

    write_atomically(&ctl.join("end"), "");
    let done = job.finish();
    done.assert_quiet_success(label);
    let message = if file.ends_with(".fifo") {
        "through the fifo"
    } else {
        "through the socket"
    };
    assert_eq!(
        done.stdout_text(),
        format!("READY\n{message}\nEND\n"),
        "{label}"
    );
}

#[test]
fn fifo_in_unseen_directory_is_refused() {
    refused_for(
        "files-refuse-fifo",
        "python3 holding a FIFO of its directory",
        PYTHON_FIFO,
        "pipe.fifo",
        |w| NodeFiles::Hidden(vec![w]),
    );
}

#[test]
fn unix_socket_in_unseen_directory_is_refused() {
    refused_for(
        "files-refuse-socket",
        "python3 listening on a unix socket of its directory",
        PYTHON_SOCKET,
        "app.sock",
        |w| NodeFiles::Different(vec![w]),
    );
}
