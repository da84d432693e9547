//! Automatic load balancing against real sshd nodes on loopback. Home and each node are CPU
//! slices of this host (cgroups with one CPU of quota each, see `common/cgroup.rs`): mrun
//! measures each machine's run queue within its slice, so the three see separate loads as
//! separate machines would. Nobody calls `mrunctl migrate` here: the daemon's balancer moves
//! jobs by itself, and each move is read back from `~/.local/state/mrun/mrun.log`.
//!
//! What must hold: CPU-bound jobs started at a loaded home spread to the nodes, with
//! byte-exact output (and `mrunctl status --watch` shows it live); jobs started with
//! `mrun --home` stay; short young jobs never move; a job whose node gets loaded moves away; a
//! node that goes down takes only its own jobs with it, each reported lost in one clear line.
//!
//! The tests run one at a time (they measure load; running them side by side would only make
//! them slower). Runs as root (sshd, cgroups). Build first:
//! `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Home and nodes `a` and `b`, one CPU each, and a client home configured to balance onto
/// both with the given `[balance]` settings.
struct Cluster {
    // Nodes before slices: sshd ends first, then whatever is left in the slices is killed.
    a: Node,
    b: Node,
    client: ClientHome,
    home_slice: CpuSlice,
    a_slice: CpuSlice,
    b_slice: CpuSlice,
    runtime: PathBuf,
}

impl Cluster {
    fn start(sb: &Sandbox, tag: &str, balance: &str) -> Cluster {
        let home_slice = CpuSlice::new(&format!("{tag}-home"), 1.0);
        let a_slice = CpuSlice::new(&format!("{tag}-a"), 1.0);
        let b_slice = CpuSlice::new(&format!("{tag}-b"), 1.0);
        let in_slice = |s: &CpuSlice| NodeOptions {
            cgroup_procs: Some(s.procs_file()),
            ..NodeOptions::default()
        };
        let a = Node::start_with(sb, "a", in_slice(&a_slice));
        let b = Node::start_with(sb, "b", in_slice(&b_slice));
        let client = ClientHome::for_nodes(sb, &[("a", &a), ("b", &b)]);
        let config = client.home().join(".config/mrun/config.toml");
        std::fs::create_dir_all(config.parent().expect("a parent")).expect("mkdir .config/mrun");
        std::fs::write(
            &config,
            format!("nodes = [\"a\", \"b\"]\n\n[balance]\n{balance}"),
        )
        .expect("writing config.toml");
        // Job sockets (and the daemon's) private to this test: the balancer sees only its jobs.
        let runtime = sb.mkdir("runtime");
        Cluster {
            a,
            b,
            client,
            home_slice,
            a_slice,
            b_slice,
            runtime,
        }
    }

    /// `mrun` as the client, started in the home slice.
    fn mrun<'a>(&self, sb: &'a Sandbox) -> SshMrun<'a> {
        let mut m = SshMrun::new(sb, &self.client, RemoteAgent::Built)
            .in_cgroup(self.home_slice.procs_file());
        m.mrun = m
            .mrun
            .with_runtime_dir(RuntimeDir::At(self.runtime.clone()));
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.client.home().join(".local/state/mrun/mrun.log"))
            .unwrap_or_default()
    }

    /// The balancer's moves so far (lines of the log).
    fn moves(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("balancer: job") && !l.contains("failed"))
            .map(str::to_string)
            .collect()
    }

    fn moves_of(&self, job: &Job) -> Vec<String> {
        let tag = format!("balancer: job {} ", job.id);
        self.moves()
            .into_iter()
            .filter(|l| l.contains(&tag))
            .collect()
    }
}

/// A CPU-bound job with known output: `gzip -9` of the shared text fixture (about 2 s of one
/// CPU here), to a pipe.
fn start_gzip(m: &SshMrun, label: &str) -> Job {
    start_gzip_of(m, label, &gzip_input())
}

fn start_gzip_of(m: &SshMrun, label: &str, input: &std::path::Path) -> Job {
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    m.start(label, "gzip", &args, Input::Null, Output::Pipe)
}

/// A longer job's input: about 6 s of gzip -9 on one CPU here, long enough to move twice.
fn long_input() -> PathBuf {
    text_file(80 * MIB)
}

fn long_reference() -> &'static [u8] {
    gzip_reference_of(&long_input())
}

fn finish_exact(job: Job) {
    assert_exact(&job.finish(), gzip_reference());
}

fn assert_exact(done: &Finished, want: &[u8]) {
    done.assert_success();
    assert!(
        done.stdout == want,
        "{}: output differs from an uninterrupted gzip ({} vs {} bytes); stderr: {}",
        done.label,
        done.stdout.len(),
        want.len(),
        String::from_utf8_lossy(&done.stderr)
    );
}

/// Starts `n` busy loops (not mrun jobs) in `slice`: other work on that machine.
fn burners(slice: &CpuSlice, n: usize) -> Vec<Proc> {
    (0..n)
        .map(|i| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "while :; do :; done"]);
            Proc::spawn(
                format!("burner {i}"),
                slice.wrap(cmd),
                Input::Null,
                Output::Null,
            )
        })
        .collect()
}

/// Starts `n` gzip jobs of `input` at home and waits until the balancer moved some to each
/// node.
fn start_and_spread(c: &Cluster, m: &SshMrun, n: usize, input: &std::path::Path) -> Vec<Job> {
    gzip_reference_of(input);
    let jobs: Vec<Job> = (0..n)
        .map(|i| start_gzip_of(m, &format!("gzip {i}"), input))
        .collect();
    let spread = wait_until(LONG, || {
        let moves = c.moves();
        moves.iter().any(|l| l.contains("home -> a "))
            && moves.iter().any(|l| l.contains("home -> b "))
    });
    assert!(
        spread,
        "jobs did not spread to both nodes by themselves; the log:\n{}",
        c.log()
    );
    jobs
}

const FAST: &str = "min_age = 1.0\nmin_stay = 2.0\nstay_factor = 1.0\n";
const LONG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------

#[test]
fn six_cpu_bound_jobs_spread_to_the_nodes_by_themselves() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_six");
    let c = Cluster::start(&sb, "six", FAST);
    let m = c.mrun(&sb);
    let jobs = start_and_spread(&c, &m, 6, &gzip_input());
    // The live view shows the three machines, the jobs, and the moves.
    let mut cmd = m
        .mrun
        .mrunctl_command(&["status", "--watch", "--interval", "0.3"]);
    cmd.env("HOME", c.client.home());
    let mut view = Proc::spawn("mrunctl status --watch", cmd, Input::Null, Output::Pipe);
    let frames = wait_until(TIMEOUT, || {
        view.stdout_text().matches("MACHINE").count() >= 2
    });
    view.kill();
    let text = view.stdout_text();
    assert!(
        frames,
        "mrunctl status --watch showed fewer than 2 frames: {text}"
    );
    let first = text.split("\n\n\n").next().unwrap_or_default().to_string();
    for want in [
        "home ",
        "\na ",
        "\nb ",
        "balancing on",
        "recent moves",
        "gzip -9",
    ] {
        assert!(
            text.contains(want),
            "{want:?} missing from the live view:\n{first}"
        );
    }
    assert!(
        !text.contains('\x1b'),
        "escape sequences in a piped live view:\n{first}"
    );
    eprintln!("the live view:\n{first}");
    for j in jobs {
        finish_exact(j);
    }
    eprintln!("moves:\n{}", c.moves().join("\n"));
}

#[test]
fn jobs_started_with_home_are_never_moved() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_pinned");
    let c = Cluster::start(&sb, "pinned", FAST);
    let m = c.mrun(&sb);
    gzip_reference();
    let input = gzip_input();
    let mut args: Vec<&OsStr> = vec![OsStr::new("gzip")];
    args.extend(GZIP_ARGS.iter().map(OsStr::new));
    args.push(input.as_os_str());
    // The oldest job, so the first the balancer would pick were it not pinned.
    let pinned = m.start(
        "mrun --home gzip",
        "--home",
        &args,
        Input::Null,
        Output::Pipe,
    );
    let others: Vec<Job> = (0..3)
        .map(|i| start_gzip(&m, &format!("gzip {i}")))
        .collect();
    let moved = wait_until(LONG, || others.iter().any(|j| !c.moves_of(j).is_empty()));
    assert!(moved, "no job moved at all; the log:\n{}", c.log());
    let tag = format!("balancer: job {} ", pinned.id);
    finish_exact(pinned);
    for j in others {
        finish_exact(j);
    }
    let log = c.log();
    assert!(
        !log.contains(&tag),
        "the job started with --home was moved (or tried):\n{log}"
    );
}

/// Jobs whose command named their node (`mrun --nodes b`) at a loaded home: the balancer moves
/// them, to b only, although a (named by the config file) is just as idle.
#[test]
fn jobs_started_with_nodes_move_only_there() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_named");
    let c = Cluster::start(&sb, "named", FAST);
    let m = c.mrun(&sb);
    gzip_reference();
    let input = gzip_input();
    let mut args: Vec<&OsStr> = vec![OsStr::new("b"), OsStr::new("gzip")];
    args.extend(GZIP_ARGS.iter().map(OsStr::new));
    args.push(input.as_os_str());
    let jobs: Vec<Job> = (0..3)
        .map(|i| {
            m.start(
                &format!("mrun --nodes b gzip {i}"),
                "--nodes",
                &args,
                Input::Null,
                Output::Pipe,
            )
        })
        .collect();
    let moved = wait_until(LONG, || jobs.iter().any(|j| !c.moves_of(j).is_empty()));
    assert!(moved, "no job moved at all; the log:\n{}", c.log());
    let tags: Vec<String> = jobs
        .iter()
        .map(|j| format!("balancer: job {} ", j.id))
        .collect();
    for j in jobs {
        finish_exact(j);
    }
    let moves: Vec<String> = c
        .moves()
        .into_iter()
        .filter(|l| tags.iter().any(|t| l.contains(t)))
        .collect();
    assert!(
        moves
            .iter()
            .all(|l| !l.contains("-> a ") && !l.contains(" a -> ")),
        "a job started with --nodes b went to a:\n{}",
        moves.join("\n")
    );
}

#[test]
fn a_batch_spreads_and_its_joblog_names_the_nodes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_each");
    let c = Cluster::start(&sb, "each", FAST);
    let m = c.mrun(&sb);
    let want = gzip_reference();
    let inputs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = sb.path(&format!("part{i}.txt"));
            std::fs::copy(gzip_input(), &p)
                .unwrap_or_else(|e| panic!("copying to {}: {e}", p.display()));
            p
        })
        .collect();
    let joblog = sb.path("jobs.log");
    let mut args: Vec<&OsStr> = ["-j", "4", "--joblog"]
        .into_iter()
        .map(OsStr::new)
        .collect();
    args.push(joblog.as_os_str());
    args.extend(["gzip", "-9", "-n", ":::"].into_iter().map(OsStr::new));
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    let done = m.run("mrun --each gzip", "--each", &args);
    done.assert_success();
    for p in &inputs {
        let gz = p.with_extension("txt.gz");
        assert!(
            read(&gz) == want,
            "{} differs from an uninterrupted gzip",
            gz.display()
        );
    }
    let log = std::fs::read_to_string(&joblog).expect("the job log");
    let hosts: Vec<&str> = log
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    assert_eq!(hosts.len(), 4, "{log}");
    assert!(
        hosts.iter().any(|h| *h == "a" || *h == "b"),
        "no job ended on a node:\n{log}\nmoves:\n{}",
        c.log()
    );
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("4 jobs: 4 succeeded"), "{}", done.describe());
}

#[test]
fn young_short_jobs_never_move() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_young");
    let c = Cluster::start(&sb, "young", "");
    let m = c.mrun(&sb);
    // Home is loaded, the nodes idle: moving would pay for an old job, never for these.
    let _load = burners(&c.home_slice, 3);
    for i in 0..5 {
        for (program, args) in [("true", vec![]), ("sleep", vec!["0.1"])] {
            let done = m.run(&format!("{program} {i}"), program, &args);
            done.assert_success();
            assert!(done.stderr.is_empty(), "{}", done.describe());
        }
    }
    assert!(c.moves().is_empty(), "young jobs were moved:\n{}", c.log());
}

#[test]
fn idle_jobs_stay_however_old() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_idle");
    let c = Cluster::start(&sb, "idle", FAST);
    let m = c.mrun(&sb);
    // Home is loaded and the nodes idle, but a sleeping job frees no CPU by leaving: it is
    // old enough to move (min_age 1 s) for the whole of its 5 s, and never does.
    let _load = burners(&c.home_slice, 3);
    let done = m.run("sleep 5", "sleep", &["5"]);
    done.assert_success();
    assert!(c.moves().is_empty(), "an idle job was moved:\n{}", c.log());
}

#[test]
fn a_job_whose_node_gets_loaded_moves_away() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_loaded");
    let c = Cluster::start(&sb, "loaded", FAST);
    let m = c.mrun(&sb);
    long_reference();
    let jobs: Vec<Job> = (0..2)
        .map(|i| start_gzip_of(&m, &format!("gzip {i}"), &long_input()))
        .collect();
    // Two jobs on one CPU: one of them goes to a node.
    let mut moved = None;
    let went = wait_until(LONG, || {
        moved = jobs.iter().find_map(|j| {
            c.moves_of(j).iter().find_map(|l| {
                ["a", "b"]
                    .into_iter()
                    .find(|n| l.contains(&format!("home -> {n} ")))
                    .map(|n| (j.id, n))
            })
        });
        moved.is_some()
    });
    assert!(went, "no job left home; the log:\n{}", c.log());
    let (id, node) = moved.expect("a moved job");
    let slice = if node == "a" { &c.a_slice } else { &c.b_slice };
    let _load = burners(slice, 3);
    let job = jobs.iter().find(|j| j.id == id).expect("the moved job");
    let away = wait_until(LONG, || {
        c.moves_of(job)
            .iter()
            .any(|l| l.contains(&format!("{node} -> ")))
    });
    assert!(
        away,
        "job {id} stayed on the loaded node {node}; the log:\n{}",
        c.log()
    );
    drop(_load);
    for j in jobs {
        assert_exact(&j.finish(), long_reference());
    }
}

#[test]
fn a_node_going_down_loses_only_its_own_jobs() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_down");
    let c = Cluster::start(&sb, "down", FAST);
    let m = c.mrun(&sb);
    // Long jobs: none may end on its own between finding where it is and the node's end.
    let jobs = start_and_spread(&c, &m, 4, &long_input());
    // Where each job is now, then node a goes down (every process in its slice killed).
    let places: Vec<At> = jobs.iter().map(|j| locate(j, &[&c.a, &c.b]).1).collect();
    assert!(
        places.contains(&At::Node("a".into())),
        "no job on a: {places:?}"
    );
    c.a_slice.kill_all();
    let mut lost = 0;
    for (job, at) in jobs.into_iter().zip(places) {
        // A move to a that ended just as a went down would make a job found elsewhere a's.
        let went_to_a =
            at == At::Node("a".into()) || c.moves_of(&job).iter().any(|l| l.contains("-> a "));
        let done = job.finish();
        if done.status.code() == Some(255) {
            let err = String::from_utf8_lossy(&done.stderr);
            assert!(
                went_to_a,
                "a job that was not on a ended: {}",
                done.describe()
            );
            assert!(
                err.contains("lost the connection to node a") && err.contains("the job is lost"),
                "{}",
                done.describe()
            );
            lost += 1;
        } else {
            assert!(
                at != At::Node("a".into()),
                "a job on a survived a going down: {}",
                done.describe()
            );
            assert_exact(&done, long_reference());
        }
    }
    assert!(lost >= 1, "no job was lost with a");
}

/// Burns a CPU for argv[1] seconds while holding argv[2]: `tcp` a listening TCP socket (which
/// /proc shows), `bigfile` a file with no name of 9 MiB (which only a real checkpoint finds
/// too large to carry), `nothing` nothing in the way. Prints one line when it ends, and ends
/// holding it: `os._exit`, not the interpreter's shutdown, which closes the socket first and
/// leaves a job that /proc shows movable for as long as the rest of the shutdown takes (the
/// balancer once tried it then, on a loaded machine, and found it gone).
const HOLDER_PY: &str = r#"
import os, socket, sys, tempfile, time
secs, kind = float(sys.argv[1]), sys.argv[2]
if kind == "tcp":
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
elif kind == "bigfile":
    held = tempfile.TemporaryFile()
    held.write(b"x" * (9 << 20))
    held.flush()
end = time.monotonic() + secs
n = 0
while time.monotonic() < end:
    n += 1
print("held", kind, "to the end", flush=True)
os._exit(0)
"#;

/// The jobs that held `kind` (the command ends with it) in the log's lines with `tag`.
fn log_lines<'a>(log: &'a str, tag: &str, kind: &str) -> Vec<&'a str> {
    let end = format!(" {kind})");
    log.lines()
        .filter(|l| l.contains(tag) && l.contains(&end))
        .collect()
}

#[test]
fn jobs_that_cannot_move_stay_home_say_why_once_and_are_never_tried() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_stays");
    let c = Cluster::start(&sb, "stays", FAST);
    let m = c.mrun(&sb);
    // Home is loaded and the nodes idle: the balancer would move every busy job it may.
    let _load = burners(&c.home_slice, 2);
    let python = python3();
    let args: Vec<&OsStr> = vec![
        OsStr::new("-j"),
        OsStr::new("3"),
        python.as_os_str(),
        OsStr::new("-c"),
        OsStr::new(HOLDER_PY),
        // Long enough for the balancer to move the job that can go even on a loaded machine
        // (with 10 s, CI once saw it never tried: nothing to prove the other two stayed by
        // choice).
        OsStr::new("20"),
        OsStr::new(":::"),
        OsStr::new("tcp"),
        OsStr::new("tcp"),
        OsStr::new("nothing"),
    ];
    let cmd = m.command("--each", &args);
    let batch = Proc::spawn("mrun --each holders", cmd, Input::Null, Output::Pipe);
    // While they run, `mrunctl status` says why the two stay (JSON and table alike).
    let status = |json: bool| {
        let args: &[&str] = if json {
            &["status", "--json"]
        } else {
            &["status"]
        };
        let mut cmd = m.mrun.mrunctl_command(args);
        cmd.env("HOME", c.client.home());
        Proc::spawn("mrunctl status", cmd, Input::Null, Output::Pipe).finish()
    };
    let mut doc = serde_json::Value::Null;
    let told = wait_until(TIMEOUT, || {
        doc = serde_json::from_slice(&status(true).stdout).unwrap_or_default();
        doc["jobs"].as_array().is_some_and(|jobs| {
            jobs.iter()
                .filter(|j| j["stays_home"] == "holds a listening TCP socket")
                .count()
                == 2
        })
    });
    assert!(
        told,
        "status --json does not say why two jobs stay: {doc:#}"
    );
    for j in doc["jobs"].as_array().into_iter().flatten() {
        if j["stays_home"].is_string() {
            let why = j["cannot_move"].as_str().unwrap_or_default();
            assert!(
                why.starts_with("the job cannot move: ") && why.contains("listening TCP socket"),
                "{j:#}"
            );
        }
    }
    let table = status(false).stdout_text();
    assert_eq!(
        table.matches("listening TCP socket open on fd").count(),
        2,
        "the table does not show the reason under each job:\n{table}"
    );
    let done = batch.finish();
    done.assert_success();
    let out = done.stdout_text();
    assert_eq!(out.matches("to the end").count(), 3, "{}", done.describe());
    // mrun --each says it once per job (its stderr is no terminal: one line each).
    let err = done.stderr_text();
    assert_eq!(
        err.matches("stays home: holds a listening TCP socket")
            .count(),
        2,
        "{}",
        done.describe()
    );
    let log = c.log();
    // The daemon's log says it once per job, not once per round...
    assert_eq!(
        log_lines(&log, "balancer: leaves job", "tcp").len(),
        2,
        "{log}"
    );
    // ...and the balancer never tried them, while it did move the job that could go.
    assert!(log_lines(&log, "balancer: job", "tcp").is_empty(), "{log}");
    assert!(
        log_lines(&log, "migration failed", "tcp").is_empty(),
        "{log}"
    );
    assert!(
        log_lines(&log, "balancer: job", "nothing")
            .iter()
            .any(|l| l.contains("home -> ")),
        "the job holding nothing did not move, so this proves nothing:\n{log}"
    );
}

#[test]
fn a_refusal_the_forecast_misses_is_remembered_and_not_retried_every_round() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new("balance_refused");
    let c = Cluster::start(&sb, "refused", FAST);
    let m = c.mrun(&sb);
    let _load = burners(&c.home_slice, 2);
    let python = python3();
    let job = m.start(
        "a job holding a 9 MiB file with no name",
        &python,
        &["-c", HOLDER_PY, "12", "bigfile"],
        Input::Null,
        Output::Pipe,
    );
    let tried = wait_until(LONG, || {
        !log_lines(&c.log(), "migration failed", "bigfile").is_empty()
    });
    assert!(tried, "the balancer never tried the job:\n{}", c.log());
    // Remembered: status says why, and when it will be tried again.
    let mut cmd = m.mrun.mrunctl_command(&["status", "--json"]);
    cmd.env("HOME", c.client.home());
    let done = Proc::spawn("mrunctl status --json", cmd, Input::Null, Output::Pipe).finish();
    let doc: serde_json::Value = serde_json::from_slice(&done.stdout).expect("JSON");
    let me = &doc["jobs"][0];
    assert_eq!(me["stays_home"], "holds a deleted file", "{doc:#}");
    assert!(
        me["cannot_move"]
            .as_str()
            .is_some_and(|w| w.contains("the balancer tries again at ")),
        "{doc:#}"
    );
    let done = job.finish();
    done.assert_success();
    assert_eq!(done.stdout_text(), "held bigfile to the end\n");
    // One attempt in its whole life (the next is 30 s after the first, past its end).
    let log = c.log();
    assert_eq!(
        log_lines(&log, "migration failed", "bigfile").len(),
        1,
        "{log}"
    );
    assert_eq!(
        log_lines(&log, "balancer: leaves job", "bigfile").len(),
        1,
        "{log}"
    );
}
