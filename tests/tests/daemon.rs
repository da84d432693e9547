//! The home daemon listens only where its user can reach it, and answers nobody else.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use std::time::Duration;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What user `nobody` gets from the daemon socket at `path`: the Python client's one line.
fn nobody_talks_to(path: &std::path::Path) -> String {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\nexcept OSError as e:\n    print('connect failed', e.errno); raise SystemExit\ntry:\n    s.sendall(b'connect local\\n')\n    s.settimeout(5)\n    data = s.recv(100)\nexcept OSError:\n    data = b'refused'\nprint('answer', repr(data))\n",
        path.display().to_string()
    );
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            python,
            "-c",
            &script,
        ])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run python3 as nobody");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn another_user_cannot_use_the_daemon() {
    if !is_root() {
        eprintln!("skipped: needs root to act as a second user");
        return;
    }
    let sb = Sandbox::new("daemon-privacy");
    let runtime = sb.path("runtime");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let home = sb.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut daemon = Command::new(mrun_path())
        .arg("--daemon")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("MRUN_DAEMON_IDLE_SECS", "20")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let dir = runtime.join("mrun");
    let mut socket = None;
    wait_until(TIMEOUT, || {
        socket = std::fs::read_dir(&dir).ok().and_then(|mut d| {
            d.find_map(|e| {
                e.ok()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains("daemon-"))
            })
        });
        socket.is_some()
    });
    let socket = socket.expect("the daemon's socket");
    let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the socket directory must be private");

    // The directory keeps nobody out...
    let answer = nobody_talks_to(&socket);
    assert!(
        answer.contains("connect failed 13"),
        "nobody reached the daemon: {answer}"
    );
    // ...and with the directory opened up on purpose, the daemon itself still refuses.
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let answer = nobody_talks_to(&socket);
    // The daemon hangs up on another user without a word (EOF, or a reset).
    assert!(
        answer.contains("answer b''") || answer.contains("answer b'refused'"),
        "the daemon answered another user: {answer}"
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
    std::thread::sleep(Duration::from_millis(50));
}

/// `mrunctl ARGS...` as the user of `client` (its HOME, so its daemon), job sockets in
/// `/tmp/mrun-UID` as `SshMrun`'s jobs, the built agent on every node, `envs` added.
fn ctl(sb: &Sandbox, client: &ClientHome, args: &[&str], envs: &[(&str, &str)]) -> Finished {
    let mut cmd = sb.command(mrunctl_path());
    cmd.args(args)
        .env("HOME", client.home())
        .env("MRUN_REMOTE_AGENT", agent_path())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("MRUN_NODES")
        .env_remove("MRUN_NO_DAEMON")
        .env_remove("SSH_AUTH_SOCK");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc::spawn(
        format!("mrunctl {}", args.join(" ")),
        cmd,
        Input::Null,
        Output::Pipe,
    )
    .finish()
}

/// Every `{"node": NAME, "reachable": BOOL, "problem": ...}` object in a JSON document, wherever
/// it sits in it: (name, reachable, problem).
fn node_states(doc: &str) -> Vec<(String, bool, Option<String>)> {
    fn walk(v: &serde_json::Value, out: &mut Vec<(String, bool, Option<String>)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let (Some(serde_json::Value::String(n)), Some(serde_json::Value::Bool(r))) =
                    (map.get("node"), map.get("reachable"))
                {
                    let problem = map
                        .get("problem")
                        .and_then(|p| p.as_str())
                        .map(str::to_string);
                    out.push((n.clone(), *r, problem));
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) {
        walk(&v, &mut out);
    }
    out
}

/// Runs `mrunctl ARGS --json` until every node of `want` (name, reachable) is reported so;
/// returns the last states seen and whether they matched.
fn until_nodes_are(
    sb: &Sandbox,
    client: &ClientHome,
    args: &[&str],
    envs: &[(&str, &str)],
    want: &[(&str, bool)],
) -> (Vec<(String, bool, Option<String>)>, bool) {
    let mut seen = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        let out = ctl(sb, client, args, envs);
        seen = node_states(&out.stdout_text());
        out.status.success()
            && want.iter().all(|(n, r)| {
                seen.iter()
                    .any(|(name, reachable, _)| name == n && reachable == r)
            })
    });
    (seen, ok)
}

/// The daemon of `client`'s HOME: exactly one runs.
fn the_daemon(client: &ClientHome) -> i32 {
    let mut found = Vec::new();
    assert!(
        wait_until(TIMEOUT, || {
            found = daemons_for(client.home());
            found.len() == 1
        }),
        "expected one mrun daemon for {}, found {found:?}",
        client.home().display()
    );
    found[0]
}

/// `pipe:[INODE]` of an open file.
fn pipe_name(f: &std::fs::File) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("pipe:[{}]", f.metadata().expect("fstat the pipe").ino())
}

/// What `/proc/PID/fd/*` point at.
fn fd_targets(pid: i32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_default();
                    (e.file_name().to_string_lossy().into_owned(), target)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 11: the daemon kept the working directory and every descriptor of the shell that
/// first started it (a caller's pipe stayed open for 20 minutes), and could not be stopped.
/// Started from a command holding an extra pipe (fd 9, as a shell's `9>` or make's jobserver
/// leaves it) in a directory of its own, it keeps neither, has a session of its own, and
/// `mrunctl daemon status`/`stop` see and end it.
#[test]
fn daemon_detaches_from_its_starter_and_stops_on_request() {
    let sb = Sandbox::new("daemon-detach");
    let client = ClientHome::new(&sb);
    let (mut read_end, write_end) = pipe();
    let held = pipe_name(&write_end);
    let mut cmd = sb.command(mrunctl_path());
    cmd.args(["nodes", "--nodes", "local"])
        .env("HOME", client.home())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("MRUN_NODES");
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = write_end.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it gives the child the pipe as fd 9, without
        // close-on-exec, as a shell's redirection would.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 9) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = Proc::spawn(
        "mrunctl nodes --nodes local",
        cmd,
        Input::Null,
        Output::Pipe,
    )
    .finish();
    assert!(
        out.status.success() && out.stdout_text().contains("local"),
        "{}",
        out.describe()
    );
    drop(write_end);
    let daemon = the_daemon(&client);

    let cwd = std::fs::read_link(format!("/proc/{daemon}/cwd")).expect("the daemon's cwd");
    assert_eq!(
        cwd,
        std::path::Path::new("/"),
        "the daemon keeps its starter's directory"
    );
    let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).expect("its stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    assert_eq!(
        fields[3],
        daemon.to_string(),
        "the daemon is not the leader of a session of its own: {stat}"
    );
    let fds = fd_targets(daemon);
    assert!(
        !fds.iter().any(|(_, t)| t == &held),
        "the daemon holds its starter's pipe ({held}): {fds:?}"
    );
    for (fd, target) in fds
        .iter()
        .filter(|(fd, _)| ["0", "1", "2"].contains(&fd.as_str()))
    {
        assert_eq!(target, "/dev/null", "the daemon's fd {fd}");
    }
    // What the caller sees: its pipe ends, while the daemon runs on.
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut read_end, &mut rest).expect("read the pipe to its end");
    assert!(
        daemons_for(client.home()).contains(&daemon),
        "the daemon ended"
    );

    let status = ctl(&sb, &client, &["daemon", "status"], &[]);
    assert!(
        status.status.success() && status.stdout_text().contains(&format!("pid {daemon}")),
        "{}",
        status.describe()
    );
    let stop = ctl(&sb, &client, &["daemon", "stop"], &[]);
    assert!(
        stop.status.success()
            && stop.stdout_text() == format!("mrun daemon (pid {daemon}) stopped\n"),
        "{}",
        stop.describe()
    );
    assert!(
        wait_until(TIMEOUT, || daemons_for(client.home()).is_empty()),
        "the daemon still runs after mrunctl daemon stop"
    );
    let status = ctl(&sb, &client, &["daemon", "status"], &[]);
    status.assert_exit_code(1);
    assert_eq!(status.stdout_text(), "mrun daemon: not running\n");
    let again = ctl(&sb, &client, &["daemon", "stop"], &[]);
    assert!(
        again.status.success() && again.stdout_text() == "mrun daemon: not running\n",
        "{}",
        again.describe()
    );
}

/// Issue 11: a node list given to a later command did not reach a daemon already running.
/// The daemon, started with `MRUN_NODES=a`, watches node `b` once a job started with
/// `mrun --nodes b` (which wins over `MRUN_NODES`) runs; the job moves there through it; while
/// it is there, `mrunctl daemon stop` is refused in one sentence (stopping would lose it), and
/// the job ends with its output intact.
#[test]
fn node_lists_reach_a_running_daemon_and_stop_spares_jobs_away() {
    let sb = Sandbox::new("daemon-node-lists");
    let a = Node::start(&sb, "a");
    let b = Node::start(&sb, "b");
    let client = ClientHome::for_nodes(&sb, &[("a", &a), ("b", &b)]);
    let only_a = [("MRUN_NODES", "a")];
    let (seen, ok) = until_nodes_are(&sb, &client, &["nodes", "--json"], &only_a, &[("a", true)]);
    assert!(ok, "node a never reported reachable: {seen:?}");
    assert!(
        !seen.iter().any(|(n, ..)| n == "b"),
        "b is shown before anything named it: {seen:?}"
    );
    let daemon = the_daemon(&client);

    let m = SshMrun::new(&sb, &client, RemoteAgent::Built).env("MRUN_NODES", "a");
    let (read_end, mut write_end) = pipe();
    let job = m.start(
        "tr --nodes b",
        "--nodes",
        &["b", "tr", "a-z", "A-Z"],
        Input::Stdio(read_end.into()),
        Output::Pipe,
    );
    let (seen, ok) = until_nodes_are(
        &sb,
        &client,
        &["nodes", "--json"],
        &only_a,
        &[("a", true), ("b", true)],
    );
    assert!(ok, "the daemon never watched b, the job's node: {seen:?}");
    assert_eq!(the_daemon(&client), daemon, "another daemon was started");

    m.mrun.migrate_ok(&job, "b");
    assert_at(&job, &[&a, &b], At::Node("b".into()));
    let refused = ctl(&sb, &client, &["daemon", "stop"], &[]);
    refused.assert_one_line_error(&["daemon", "1 job", "home"]);
    assert!(
        daemons_for(client.home()).contains(&daemon),
        "the daemon stopped with a job away"
    );
    std::io::Write::write_all(&mut write_end, b"moved, still here\n").expect("feed the job");
    drop(write_end);
    let done = job.finish();
    done.assert_quiet_success("tr --nodes b");
    assert_eq!(done.stdout_text(), "MOVED, STILL HERE\n");
    let stopped = ctl(&sb, &client, &["daemon", "stop"], &[]);
    assert!(stopped.status.success(), "{}", stopped.describe());
}

/// Issue 11: one dead node slowed every `mrun --each` start and `mrunctl nodes` by seconds.
/// With a node whose port nobody listens on and one that accepts TCP but never speaks (a
/// listener this test holds and never accepts on), `mrunctl nodes`, `status` and
/// `nodes --refresh` report both down with a reason and the live node up, a batch runs every
/// job with its output, and a job moves to the live node and back.
#[test]
fn dead_nodes_are_reported_down_and_work_goes_on() {
    let sb = Sandbox::new("daemon-dead-nodes");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener that never speaks");
    let closed = format!("127.0.0.1:{refused_port}");
    let silent = format!(
        "127.0.0.1:{}",
        hanging.local_addr().expect("its address").port()
    );
    let list = format!("a,{closed},{silent}");
    let envs = [("MRUN_NODES", list.as_str())];
    let want = [
        ("a", true),
        (closed.as_str(), false),
        (silent.as_str(), false),
    ];

    let (seen, ok) = until_nodes_are(&sb, &client, &["nodes", "--json"], &envs, &want);
    assert!(ok, "mrunctl nodes: {seen:?}");
    assert!(
        seen.iter()
            .all(|(_, up, why)| *up || why.as_deref().is_some_and(|w| !w.is_empty())),
        "a node is down without a reason: {seen:?}"
    );
    let (seen, ok) = until_nodes_are(&sb, &client, &["status", "--json"], &envs, &want);
    assert!(ok, "mrunctl status: {seen:?}");
    let (seen, ok) = until_nodes_are(
        &sb,
        &client,
        &["nodes", "--refresh", "--json"],
        &envs,
        &want,
    );
    assert!(ok, "mrunctl nodes --refresh: {seen:?}");

    let mut cmd = sb.command(mrun_path());
    // Given with --nodes this time, which mrun --each hands on to each of its jobs.
    cmd.args(["--each", "--nodes", &list, "echo", "one", "two", "three"])
        .env("HOME", client.home())
        .env_remove("MRUN_NODES")
        .env("MRUN_REMOTE_AGENT", agent_path())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSH_AUTH_SOCK");
    let out = Proc::spawn("mrun --each --nodes", cmd, Input::Null, Output::Pipe).finish();
    let mut lines: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    lines.sort();
    assert!(
        out.status.success() && lines == ["one", "three", "two"],
        "{}",
        out.describe()
    );

    // A job moves to the live node and back while the daemon keeps trying the dead ones.
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built).env("MRUN_NODES", &list);
    let (read_end, mut write_end) = pipe();
    let job = m.start(
        "tr beside dead nodes",
        "tr",
        &["a-z", "A-Z"],
        Input::Stdio(read_end.into()),
        Output::Pipe,
    );
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    m.mrun.migrate_ok(&job, "home");
    std::io::Write::write_all(&mut write_end, b"there and back\n").expect("feed the job");
    drop(write_end);
    let done = job.finish();
    done.assert_quiet_success("tr beside dead nodes");
    assert_eq!(done.stdout_text(), "THERE AND BACK\n");
    drop(hanging);
}

/// Issue 11: `mrunctl status` and `nodes` opened a fresh SSH session and agent per node, one
/// after another. With 12 real nodes they answer from the daemon's watch: every node reported
/// up, and asking five times each starts no agent on any node (each node counts the agents it
/// starts; only a watch reconnecting under load may add one); `--refresh` asks all anew.
#[test]
fn twelve_nodes_are_answered_from_the_daemons_watch() {
    let sb = Sandbox::new("daemon-many-nodes");
    let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
    let nodes: Vec<Node> = names.iter().map(|n| Node::start(&sb, n)).collect();
    let pairs: Vec<(&str, &Node)> = names.iter().map(String::as_str).zip(nodes.iter()).collect();
    let client = ClientHome::for_nodes(&sb, &pairs);
    let list = names.join(",");
    // The node's shell counts each agent it starts in the node's own HOME.
    let agent = format!(
        "echo started >> \"$HOME/agents-started\"; exec {}",
        agent_path().display()
    );
    let envs = [
        ("MRUN_NODES", list.as_str()),
        ("MRUN_REMOTE_AGENT", agent.as_str()),
    ];
    let want: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), true)).collect();
    let started = |node: &Node| {
        std::fs::read_to_string(node.home().join("agents-started"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    let (seen, ok) = until_nodes_are(&sb, &client, &["nodes", "--json"], &envs, &want);
    assert!(ok, "not every node reported up: {seen:?}");
    let before: Vec<usize> = nodes.iter().map(started).collect();
    for _ in 0..5 {
        let (seen, ok) = until_nodes_are(&sb, &client, &["status", "--json"], &envs, &want);
        assert!(ok, "mrunctl status: {seen:?}");
        let text = ctl(&sb, &client, &["nodes"], &envs).stdout_text();
        for n in &names {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().next() == Some(n.as_str())),
                "mrunctl nodes has no line for {n}: {text}"
            );
        }
    }
    for ((name, node), was) in names.iter().zip(&nodes).zip(&before) {
        let now = started(node);
        assert!(
            now <= was + 1,
            "{} agents were started on {name} while status and nodes were asked 5 times each",
            now - was
        );
    }
    let (seen, ok) = until_nodes_are(
        &sb,
        &client,
        &["nodes", "--refresh", "--json"],
        &envs,
        &want,
    );
    assert!(ok, "mrunctl nodes --refresh: {seen:?}");
    for ((name, node), was) in names.iter().zip(&nodes).zip(&before) {
        assert!(
            started(node) > *was,
            "--refresh started no agent on {name}: it did not ask anew"
        );
    }
}
