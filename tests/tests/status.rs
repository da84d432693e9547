//! What `mrunctl status` and `mrunctl nodes` tell, with a job away on a real sshd node: the
//! JSON of both against its documented schema (`docs/json.md`, read here, compared both ways),
//! one job count per machine in both commands, the job's total CPU time wherever it ran, a
//! multi-line command on one line, manual moves among the daemon's recent moves, ISO 8601
//! times in `mrun.log`.
//!
//! Runs as root (sshd). Build first: `cargo build --release -p mrun -p mrun-agent`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Node `a` and a client home configured with it, balancing off (only the test moves jobs),
/// and a job socket directory private to the test (its status lists only its jobs).
struct Setup<'a> {
    _a: Node,
    client: ClientHome,
    m: SshMrun<'a>,
}

fn setup(sb: &Sandbox) -> Setup<'_> {
    let a = Node::start(sb, "a");
    let client = ClientHome::for_nodes(sb, &[("a", &a)]);
    let config = client.home().join(".config/mrun/config.toml");
    std::fs::create_dir_all(config.parent().expect("a parent")).expect("mkdir .config/mrun");
    std::fs::write(&config, "nodes = [\"a\"]\n\n[balance]\nenabled = false\n")
        .expect("writing config.toml");
    let mut m = SshMrun::new(sb, &client, RemoteAgent::Built);
    m.mrun = m.mrun.with_runtime_dir(RuntimeDir::At(sb.mkdir("runtime")));
    Setup { _a: a, client, m }
}

impl Setup<'_> {
    fn mrunctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.m.mrun.mrunctl_command(args);
        cmd.env("HOME", self.client.home())
            .env_remove("MRUN_NODES")
            .env_remove("MRUN_NO_DAEMON")
            .env("MRUN_REMOTE_AGENT", agent_path());
        cmd
    }

    fn mrunctl(&self, args: &[&str]) -> Finished {
        let label = format!("mrunctl {}", args.join(" "));
        let done =
            Proc::spawn(label, self.mrunctl_command(args), Input::Null, Output::Pipe).finish();
        done.assert_success();
        done
    }

    fn json(&self, args: &[&str]) -> Value {
        let done = self.mrunctl(args);
        serde_json::from_slice(&done.stdout).unwrap_or_else(|e| {
            panic!(
                "mrunctl {args:?} printed no JSON ({e}): {}",
                done.describe()
            )
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.client.home().join(".local/state/mrun/mrun.log"))
            .unwrap_or_default()
    }
}

/// The fields of each object `docs/json.md` documents: `## name` headings, each followed by a
/// table whose rows start with `` | `field` | ``.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/json.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("## ") {
            current = Some(name.trim().to_string());
        } else if let (Some(name), Some(row)) = (&current, line.strip_prefix("| `")) {
            if let Some((field, _)) = row.split_once("` |") {
                out.entry(name.clone())
                    .or_default()
                    .insert(field.to_string());
            }
        }
    }
    out
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// `got`'s fields are exactly the documented `object`'s.
fn matches_doc(docs: &BTreeMap<String, BTreeSet<String>>, object: &str, got: &Value) {
    let want = docs
        .get(object)
        .unwrap_or_else(|| panic!("docs/json.md documents no `{object}`"));
    let have = keys(got);
    let undocumented: Vec<_> = have.difference(want).collect();
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "`{object}`: printed but not in docs/json.md: {undocumented:?}; documented but not \
         printed: {missing:?}\n{got:#}"
    );
}

/// The JOBS column of `machine`'s row in a machine table.
fn jobs_column(table: &str, machine: &str) -> Option<u64> {
    let header = table.lines().find(|l| l.starts_with("NODE"))?;
    let column = header.split_whitespace().position(|w| w == "JOBS")?;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(machine))?;
    // Columns before JOBS: NODE REACHABLE CPUS LOAD/CPU "MEM FREE" (two header words, one value).
    row.split_whitespace().nth(column - 1)?.parse().ok()
}

fn start_gzip(s: &Setup, input: &std::path::Path) -> Job {
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    s.m.start("gzip", "gzip", &args, Input::Null, Output::Pipe)
}

/// About 6 s of gzip -9 on one CPU here: long enough to be moved twice.
fn long_input() -> PathBuf {
    text_file(80 * MIB)
}

#[test]
fn json_of_status_and_nodes_is_as_documented_and_counts_agree() {
    let sb = Sandbox::new("status-json");
    let s = setup(&sb);
    let docs = documented();
    let input = long_input();
    let want = gzip_reference_of(&input).to_vec();
    let away = start_gzip(&s, &input);
    s.m.mrun.migrate_ok(&away, "a");
    // A job at home holding a pipe a process outside it shares (`--keep-fd`): its
    // `shared_fds` entries are checked too.
    let (read_end, write_end) = pipe();
    let inner = s.m.command("--keep-fd", &["9", "sleep", "60"]);
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"exec 9<&0 </dev/null; exec "$@""#)
        .arg("sh")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let mut kept = s.m.mrun.spawn_job(
        "mrun --keep-fd 9 sleep 60",
        sh,
        Input::Stdio(read_end.into()),
        Output::Pipe,
    );

    let status = s.json(&["status", "--json"]);
    matches_doc(&docs, "status", &status);
    assert_eq!(status["version"], 1);
    let jobs = status["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2, "{status:#}");
    for j in jobs {
        matches_doc(&docs, "job", j);
        for f in j["shared_fds"].as_array().expect("shared_fds") {
            matches_doc(&docs, "shared fd", f);
        }
        assert!(
            j["started"].as_str().is_some_and(iso8601_utc),
            "not an ISO 8601 UTC time: {j:#}"
        );
    }
    let job = |id: u32| jobs.iter().find(|j| j["job"] == id).expect("the job");
    assert_eq!(job(away.id)["place"], "a");
    assert!(job(away.id)["cpu_seconds"].is_number(), "{status:#}");
    assert_eq!(job(kept.id)["shared_fds"][0]["fd"], 9, "{status:#}");
    let nodes = s.json(&["nodes", "--json"]);
    matches_doc(&docs, "nodes", &nodes);
    assert_eq!(nodes["version"], 1);
    for listing in [&status["nodes"], &nodes["nodes"]] {
        let machines = listing.as_array().expect("nodes");
        for n in machines {
            matches_doc(&docs, "node", n);
        }
        let names: Vec<&str> = machines.iter().filter_map(|n| n["node"].as_str()).collect();
        assert_eq!(names, ["home", "a"], "{listing:#}");
        assert_eq!(machines[0]["home"], true);
        assert!(
            machines[0]["cpus"].as_u64().is_some_and(|c| c >= 1),
            "{listing:#}"
        );
        assert!(machines[0]["mem_available_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0));
        assert_eq!(
            (&machines[0]["jobs"], &machines[1]["jobs"]),
            (&1.into(), &1.into())
        );
    }
    // The tables of both commands show the same counts as their JSON.
    let status_table = s.mrunctl(&["status"]).stdout_text();
    let nodes_table = s.mrunctl(&["nodes"]).stdout_text();
    for table in [&status_table, &nodes_table] {
        assert_eq!(
            (jobs_column(table, "home"), jobs_column(table, "a")),
            (Some(1), Some(1)),
            "{table}"
        );
    }

    drop(write_end);
    kept.mrun.kill();
    let done = away.finish();
    done.assert_success();
    assert!(done.stdout == want, "the moved gzip's output differs");
}

/// `2026-12-01T19:38:37Z`.
fn iso8601_utc(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The job's `cpu_seconds` and place in `mrunctl status --json`.
fn cpu_and_place(s: &Setup, job: &Job) -> (Option<f64>, String) {
    let status = s.json(&["status", "--json"]);
    let j = status["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job"] == job.id).cloned())
        .unwrap_or_default();
    (
        j["cpu_seconds"].as_f64(),
        j["place"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn cpu_time_adds_up_across_moves_and_manual_moves_are_recent_moves() {
    let sb = Sandbox::new("status-cpu");
    let s = setup(&sb);
    let input = long_input();
    let want = gzip_reference_of(&input).to_vec();
    // The live view, whose daemon watches the jobs.
    let mut view = Proc::spawn(
        "mrunctl status --watch",
        s.mrunctl_command(&["status", "--watch", "--interval", "0.3"]),
        Input::Null,
        Output::Pipe,
    );
    // A command of two lines (a script), as a shell's `mrun sh -c "..."` gives.
    let script = "exec gzip -9 -n -c \"$1\"\n: the second line";
    let job = s.m.start(
        "sh -c (two lines) gzip",
        "sh",
        &[
            OsStr::new("-c"),
            OsStr::new(script),
            OsStr::new("sh"),
            input.as_os_str(),
        ],
        Input::Null,
        Output::Pipe,
    );
    let mut at_home = 0.0;
    assert!(
        wait_until(TIMEOUT, || {
            at_home = cpu_and_place(&s, &job).0.unwrap_or(0.0);
            at_home >= 0.5
        }),
        "no CPU time counted at home"
    );
    let table = s.mrunctl(&["status"]).stdout_text();
    let line = table
        .lines()
        .find(|l| l.starts_with(&job.id.to_string()))
        .unwrap_or_else(|| panic!("no line for the job:\n{table}"));
    assert!(
        line.ends_with(&format!(
            "sh -c exec gzip -9 -n -c \"$1\"\\n: the second line sh {}",
            input.display()
        )),
        "the command is not on its job's line, escaped:\n{table}"
    );
    assert!(!table.contains("\n: the second line"), "{table}");

    s.m.mrun.migrate_ok(&job, "a");
    // Away, the CPU time goes on from what it was at home (it showed "-").
    let mut away = (None, String::new());
    assert!(
        wait_until(TIMEOUT, || {
            away = cpu_and_place(&s, &job);
            away.1 == "a" && away.0.is_some_and(|c| c >= at_home + 0.5)
        }),
        "away on a, the CPU time is {:?} (at home it was {at_home})",
        away
    );
    let on_a = away.0.unwrap_or_default();
    s.m.mrun.migrate_ok(&job, "home");
    // Back home it does not start again at 0.
    let (back, place) = cpu_and_place(&s, &job);
    assert_eq!(place, "home");
    assert!(
        back.is_some_and(|c| c >= on_a),
        "back home the CPU time is {back:?}, on a it was {on_a}"
    );

    // Manual moves are among the daemon's recent moves.
    let seen = wait_until(TIMEOUT, || {
        let text = view.stdout_text();
        text.contains(&format!("job {} (sh -c exec gzip", job.id))
            && text.contains("home -> a by mrunctl migrate")
            && text.contains("a -> home by mrunctl migrate")
    });
    view.kill();
    let text = view.stdout_text();
    let last = text.rsplit("MACHINE").next().unwrap_or_default();
    assert!(
        seen,
        "the manual moves are not among the recent moves:\n{last}"
    );

    let done = job.finish();
    done.assert_success();
    assert!(done.stdout == want, "the moved gzip's output differs");
    // Every line of mrun.log starts with its time in ISO 8601, UTC.
    let log = s.log();
    assert!(log.contains("now runs on a"), "{log}");
    for l in log.lines() {
        let stamp = l.split(' ').next().unwrap_or_default();
        assert!(
            iso8601_utc(stamp),
            "a log line without an ISO 8601 time: {l}"
        );
    }
}
