//! `mrun` and `mrunctl` behave like the Unix tools users know (issue 11): a closed stdout ends
//! them as it ends `ls`; options end at the command's first word or at `--`; `mrunctl kill`
//! signals a job wherever it runs, as kill(1) does a local process; exit codes and one-sentence
//! messages are the same for every command.
//!
//! Runs as root for the SSH node (sshd must run as root to log a user in). Build first:
//! `cargo build --release --workspace`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` with its stdout (and, with `stderr_too`, its stderr) the write end of a pipe
/// whose reader has gone, as in `mrunctl status | head -0` once head exited.
fn into_closed_pipe(label: &str, mut cmd: Command, stderr_too: bool) -> Finished {
    let (read_end, write_end) = pipe();
    drop(read_end);
    if stderr_too {
        let errors = write_end.try_clone().expect("dup the pipe");
        cmd.stderr(Stdio::from(errors));
        cmd.stdout(Stdio::from(write_end)).stdin(Stdio::null());
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {label}: {e}"));
        return Finished {
            label: label.to_string(),
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
    }
    Proc::spawn(label, cmd, Input::Null, Output::Stdio(write_end.into())).finish()
}

/// How `ls` ends writing into a pipe nobody reads: what the commands must do too.
fn like_ls(sb: &Sandbox) -> Finished {
    let mut ls = sb.command("ls");
    ls.arg("-la").arg("/");
    let done = into_closed_pipe("ls -la /", ls, false);
    assert_eq!(
        done.status.signal(),
        Some(libc::SIGPIPE),
        "ls did not die of SIGPIPE here: {}",
        done.describe()
    );
    done
}

/// Ended as `ls` did, with nothing on stderr (no panic, no message).
fn assert_ended_like_ls(done: &Finished, ls: &Finished) {
    assert!(
        done.status.signal() == ls.status.signal() && done.status.code() == ls.status.code(),
        "{} ended with {:?}, ls with {:?}: {}",
        done.label,
        done.status,
        ls.status,
        done.describe()
    );
    assert!(
        done.stderr.is_empty(),
        "{} wrote on stderr: {}",
        done.describe(),
        done.label
    );
}

/// Starts the `hopper` victim (tests/victims/hopper.c) as an `mrun` job and waits until READY.
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
    job
}

/// `mrunctl ARGS...` succeeded quietly, as kill(1) does.
fn kill_ok(mrun: &Mrun, args: &[&str]) {
    let mut all = vec!["kill"];
    all.extend_from_slice(args);
    let out = mrun.mrunctl(&all);
    out.assert_success();
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        out.describe()
    );
}

/// A config file with a typo (a missing comma) in `sb`, for commands given
/// `XDG_CONFIG_HOME` = the returned directory.
fn broken_config(sb: &Sandbox) -> std::path::PathBuf {
    let base = sb.mkdir("config");
    std::fs::create_dir_all(base.join("mrun")).expect("mkdir config/mrun");
    std::fs::write(
        base.join("mrun/config.toml"),
        "nodes = [\"local\"\nhome_commands = [\"vim\"]\n",
    )
    .expect("write config.toml");
    base
}

// ---------------------------------------------------------------------------------------------
// 1. A closed stdout ends a command as it ends `ls`.
// ---------------------------------------------------------------------------------------------

/// `mrunctl status | head -3` and the like panicked ("failed printing to stdout: Broken pipe",
/// exit 101). Every printing command now ends as `ls` does: killed by SIGPIPE, quietly.
#[test]
fn mrunctl_into_a_closed_pipe_ends_like_ls() {
    let sb = Sandbox::new("unix-pipe-mrunctl");
    let mrun = Mrun::new(&sb);
    let ls = like_ls(&sb);
    let job = start_hopper(&mrun, "handle");
    let id = job.id.to_string();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["nodes"],
        &["nodes", "--json"],
        &["nodes", "--nodes", "local"],
        &["nodes", "--json", "--nodes", "local"],
        &["migrate", &id, "home"],
        &["--help"],
        &["kill", "--help"],
        &["--version"],
    ] {
        let label = format!("mrunctl {}", args.join(" "));
        let done = into_closed_pipe(&label, mrun.mrunctl_command(args), false);
        assert_ended_like_ls(&done, &ls);
    }
    // With stderr gone too, a failure has nowhere to be said: still no panic (101), exit 1.
    let done = into_closed_pipe(
        "mrunctl migrate (unknown job) 2>&1",
        mrun.mrunctl_command(&["migrate", "4294000001", "local"]),
        true,
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.describe());
}

/// `mrun COMMAND | head` ends as the command does at home (`echo` dies of SIGPIPE, as `ls`);
/// `mrun`'s own messages never panic on a closed stderr; `mrun --each` goes on with its batch
/// (the jobs' work is more than their output) and exits with its usual status.
#[test]
fn mrun_into_a_closed_pipe_ends_like_the_job() {
    let sb = Sandbox::new("unix-pipe-mrun");
    let mrun = Mrun::new(&sb);
    let ls = like_ls(&sb);
    let done = into_closed_pipe("mrun ls -la /", mrun.command("ls", &["-la", "/"]), false);
    assert_ended_like_ls(&done, &ls);
    let done = into_closed_pipe("mrun --help", mrun.command("--help", &[] as &[&str]), false);
    assert_ended_like_ls(&done, &ls);

    let mut each = mrun.command("--each", &["touch", ":::", "a", "b", "c"]);
    each.env("XDG_CONFIG_HOME", broken_config(&sb));
    let done = into_closed_pipe("mrun --each touch ::: a b c 2>&1", each, true);
    assert_eq!(done.status.code(), Some(0), "{}", done.describe());
    for f in ["a", "b", "c"] {
        assert!(sb.path(f).exists(), "the batch stopped before touch {f}");
    }
    let done = into_closed_pipe(
        "mrun no-such-program 2>&1",
        mrun.command("no-such-program-42", &[] as &[&str]),
        true,
    );
    assert_eq!(done.status.code(), Some(127), "{}", done.describe());
}

/// Away, the job's output reaches a closed pipe through `mrun`: the job gets SIGPIPE on the
/// node as it would at home, and `mrun` ends like it, quietly.
#[test]
fn job_away_writing_to_a_closed_pipe_gets_sigpipe() {
    let sb = Sandbox::new("unix-pipe-away");
    let mrun = Mrun::new(&sb);
    let (read_end, write_end) = pipe();
    let victim = sb.victim("hopper");
    let mut cmd = mrun.command(&victim, &[sb.dir().as_os_str(), OsStr::new("default")]);
    cmd.env_remove("MRUN_NODES");
    let job = mrun.spawn_job(
        "hopper default",
        cmd,
        Input::Null,
        Output::Stdio(write_end.into()),
    );
    let moved = mrun.migrate(job.id, "local");
    moved.assert_success();
    drop(read_end);
    write_atomically(&sb.path("step-1"), "");
    let done = job.mrun.finish();
    assert_eq!(
        done.status.signal(),
        Some(libc::SIGPIPE),
        "mrun did not end like a job killed by SIGPIPE: {}",
        done.describe()
    );
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

// ---------------------------------------------------------------------------------------------
// 2. Options end at the command's first word, or at `--`.
// ---------------------------------------------------------------------------------------------

/// `mrun --bogus-option ls` tried to run `--bogus-option`: an unknown option is a usage error
/// (exit 2) and nothing runs.
#[test]
fn unknown_option_is_a_usage_error() {
    let sb = Sandbox::new("unix-bogus-option");
    let mrun = Mrun::new(&sb);
    let mut cmd = mrun.command("--bogus-option", &["touch", "ran"]);
    cmd.env_remove("MRUN_NODES");
    let done = Proc::spawn(
        "mrun --bogus-option touch ran",
        cmd,
        Input::Null,
        Output::Pipe,
    )
    .finish();
    done.assert_exit_code(2);
    assert!(
        done.stderr_text()
            .starts_with("error: unexpected argument '--bogus-option'"),
        "{}",
        done.describe()
    );
    assert!(!sb.path("ran").exists(), "the command ran anyway");
}

/// `--` ends mrun's options: a program whose name starts with `-` runs; every word after the
/// command's first is the command's, options of mrun's own names included.
#[test]
fn command_words_are_the_commands() {
    let sb = Sandbox::new("unix-command-words");
    let mrun = Mrun::new(&sb);
    let bin = sb.mkdir("words-bin");
    let weird = bin.join("-weird-name");
    std::fs::write(&weird, "#!/bin/sh\nprintf '%s|' \"$0\" \"$@\"\n").expect("write script");
    std::fs::set_permissions(&weird, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // mrun's words, and where the command starts among them.
    let cases: [(&[&str], usize); 4] = [
        (&["--", "-weird-name", "--home", "-j", "2"], 1),
        (&["ls", "-l", "-a", "--", "words-bin"], 0),
        (
            &["--home", "printf", "%s|", "--home", "--each", "--", "-x"],
            1,
        ),
        (&["--home", "--", "printf", "%s|", "--keep-fd", "3"], 2),
    ];
    for (words, first) in cases {
        let label = format!("mrun {}", words.join(" "));
        let mut cmd = mrun.command(words[0], &words[1..]);
        cmd.env("PATH", &path).env_remove("MRUN_NODES");
        let got = Proc::spawn(&label, cmd, Input::Null, Output::Pipe).finish();
        got.assert_quiet_success(&label);
        // The same command run directly.
        let mut direct = sb.command(words[first]);
        direct.args(&words[first + 1..]).env("PATH", &path);
        let want = Proc::spawn(
            format!("{label} (direct)"),
            direct,
            Input::Null,
            Output::Pipe,
        )
        .finish();
        want.assert_success();
        assert!(!want.stdout.is_empty(), "{label}: nothing to compare");
        assert_same_bytes(&label, &got.stdout, &want.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. `mrunctl kill`: a job gets signals wherever it runs.
// ---------------------------------------------------------------------------------------------

/// Signals by `-NAME`, `-s name`, `--signal NUMBER` and `-SIGNAME` reach the job at home, on
/// an SSH node and back home (where its pid is no longer the job id in our namespace, so
/// kill(1) could not reach it); a signal sent to the `mrun` process still reaches it too; the
/// default TERM ends it as its handler says.
#[test]
fn kill_reaches_the_job_at_home_and_away() {
    let sb = Sandbox::new("unix-kill");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let victim = sb.victim("hopper");
    let mut job = m.start(
        "hopper handle",
        &victim,
        &[sb.dir().as_os_str(), OsStr::new("handle")],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    let id = job.id.to_string();
    let usr1 = (libc::SIGUSR1).to_string();
    let mut count = 0;
    let mut expect_usr1 = |job: &mut Job| {
        count += 1;
        job.mrun.wait_for_stdout(&format!("USR1 {count}\n"));
    };

    kill_ok(&m.mrun, &["-USR1", &id]);
    expect_usr1(&mut job);
    kill_ok(&m.mrun, &["-s", "usr1", &id]);
    expect_usr1(&mut job);

    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    kill_ok(&m.mrun, &["--signal", &usr1, &id]);
    expect_usr1(&mut job);
    kill_ok(&m.mrun, &["-SIGUSR1", &id]);
    expect_usr1(&mut job);
    // SAFETY: kill(2) has no memory-safety requirements.
    assert_eq!(unsafe { libc::kill(job.mrun_pid(), libc::SIGUSR1) }, 0);
    expect_usr1(&mut job);

    m.mrun.migrate_ok(&job, "home");
    assert_at(&job, &[&a], At::Home);
    kill_ok(&m.mrun, &[&format!("-{usr1}"), &id]);
    expect_usr1(&mut job);
    // Once each: the restored job shares its restore helper's process group, and signalling
    // that group as well as the helper delivered it twice.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(job.mrun_pid(), libc::SIGUSR1) }, 0);
    expect_usr1(&mut job);

    kill_ok(&m.mrun, &[&id]);
    let done = job.finish();
    done.assert_exit_code(42);
    assert!(
        done.stdout_text()
            .ends_with("USR1 6\nUSR1 7\nCAUGHT SIGTERM\n"),
        "{}",
        done.describe()
    );
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

/// KILL is not a signal `mrun` can be sent and pass on, yet `mrunctl kill -9` ends the job on
/// the node, and `mrun` dies of it as the job did.
#[test]
fn kill_9_ends_the_job_on_a_node() {
    let sb = Sandbox::new("unix-kill-9");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let victim = sb.victim("hopper");
    let mut job = m.start(
        "hopper default",
        &victim,
        &[sb.dir().as_os_str(), OsStr::new("default")],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));
    kill_ok(&m.mrun, &["-9", &job.id.to_string()]);
    let done = job.finish();
    done.assert_signal(libc::SIGKILL);
    assert!(done.stderr.is_empty(), "{}", done.describe());
}

/// Jobs nobody runs and signals that do not exist: one sentence each, kill(1)'s exit codes.
#[test]
fn kill_mistakes() {
    let sb = Sandbox::new("unix-kill-mistakes");
    let mrun = Mrun::new(&sb);
    let out = mrun.mrunctl(&["kill", "4294000001"]);
    out.assert_exit_code(1);
    assert_eq!(
        out.stderr_text(),
        "mrunctl: no mrun job 4294000001; `mrunctl status` lists the jobs\n"
    );
    for bad in [
        &["kill", "-s", "NOPE", "1"][..],
        &["kill"],
        &["kill", "-NOPE", "1"],
    ] {
        let out = mrun.mrunctl(bad);
        out.assert_exit_code(2);
        assert!(
            !out.stderr_text().contains("panicked"),
            "{}",
            out.describe()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Exit codes and messages.
// ---------------------------------------------------------------------------------------------

/// A move the engine refuses exits 3 (REFUSED, as the README says), in one sentence; the job
/// runs on at home, untouched. A move that fails for another reason exits 1.
#[test]
fn refused_migrate_exits_3() {
    let sb = Sandbox::new("unix-refused");
    let mrun = Mrun::new(&sb);
    let victim = sb.victim("refuse");
    let stop = sb.path("stop");
    let mut job = mrun.start(
        "refuse sysv_shm",
        &victim,
        &[OsStr::new("sysv_shm"), stop.as_os_str()],
        &[],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("tick 2\n");
    let out = mrun.migrate(job.id, "local");
    out.assert_one_line_error(&["sysv", "shm"])
        .assert_exit_code(3);
    job.assert_place(Place::Home);

    // A job the engine cannot carry is refused before any node is looked up; a movable one
    // shows how a move that fails for another reason ends.
    let mut movable = mrun.start(
        "refuse plain",
        &victim,
        &[OsStr::new("plain"), stop.as_os_str()],
        &[],
        Input::Null,
        Output::Pipe,
    );
    movable.mrun.wait_for_stdout("tick 2\n");
    let out = mrun.migrate(movable.id, "no-such-node-42");
    out.assert_one_line_error(&["no-such-node-42"])
        .assert_exit_code(1);

    sb.touch("stop");
    let done = job.finish();
    assert_victim_passed(&done, "the refused job");
    assert_victim_passed(&movable.finish(), "the job that stayed home");
}

/// An unknown job: the sentence says what to do, without an errno.
#[test]
fn unknown_job_says_what_to_do() {
    let sb = Sandbox::new("unix-unknown-job");
    let mrun = Mrun::new(&sb);
    let out = mrun.migrate(4_294_000_001, "local");
    out.assert_exit_code(1);
    assert_eq!(
        out.stderr_text(),
        "mrunctl: no mrun job 4294000001; `mrunctl status` lists the jobs\n"
    );
    let out = mrun.mrunctl(&["migrate"]);
    out.assert_exit_code(2);
    let help = mrun.mrunctl(&["--help"]);
    help.assert_success();
    for code in ["2 usage error", "3 refused", "4 bad or incompatible image"] {
        assert!(help.stdout_text().contains(code), "{}", help.describe());
    }
}

/// A typo in config.toml is one line naming the file, line and column, said once by
/// `mrun --each` (its jobs do not repeat it) and once by `mrun`.
#[test]
fn config_typo_is_said_once_in_one_line() {
    let sb = Sandbox::new("unix-config-typo");
    let mrun = Mrun::new(&sb);
    let config = broken_config(&sb);
    for (label, words) in [
        (
            "mrun --each",
            &["--each", "-j", "2", "true", ":::", "a", "b", "c"][..],
        ),
        ("mrun", &["true"]),
    ] {
        let mut cmd = mrun.command(words[0], &words[1..]);
        cmd.env("XDG_CONFIG_HOME", &config).env_remove("MRUN_NODES");
        let done = Proc::spawn(label, cmd, Input::Null, Output::Pipe).finish();
        done.assert_success();
        let err = done.stderr_text();
        let about: Vec<&str> = err.lines().filter(|l| l.contains("config.toml")).collect();
        assert_eq!(about.len(), 1, "{label}: {}", done.describe());
        assert!(
            about[0].starts_with("mrun: warning: ") && about[0].contains("line 2, column 1"),
            "{label}: {:?}",
            about[0]
        );
        assert!(
            !err.lines()
                .any(|l| l.trim().is_empty() || l.trim_start().starts_with('|')),
            "{label}: stray lines: {}",
            done.describe()
        );
    }
}

/// A job that became unmovable on the node (it opened a TCP listener there): moving it home is
/// refused by the node's engine, and that refusal exits 3 too; the job runs on there.
#[test]
fn refused_on_the_node_exits_3() {
    let sb = Sandbox::new("unix-refused-away");
    let mrun = Mrun::new(&sb);
    let script = sb.path("listen.py");
    std::fs::write(
        &script,
        "import os, socket, sys, time\n\
         d = sys.argv[1]\n\
         print('READY', flush=True)\n\
         while not os.path.exists(d + '/go'): time.sleep(0.01)\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         print('LISTENING', flush=True)\n\
         while not os.path.exists(d + '/end'): time.sleep(0.01)\n\
         print('END', flush=True)\n",
    )
    .expect("write listen.py");
    let mut job = mrun.start(
        "python3 listen.py",
        python3(),
        &[script.as_os_str(), sb.dir().as_os_str()],
        &[],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    mrun.migrate_ok(&job, "local");
    sb.touch("go");
    job.mrun.wait_for_stdout("LISTENING\n");
    let out = mrun.migrate(job.id, "home");
    out.assert_one_line_error(&["TCP"]).assert_exit_code(3);
    job.assert_place(Place::Away);
    sb.touch("end");
    let done = job.finish();
    done.assert_quiet_success("the job refused on the node");
    assert_eq!(done.stdout_text(), "READY\nLISTENING\nEND\n");
}
