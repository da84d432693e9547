//! Issue 9, item 5: descriptors a job inherits from outside it. `mrun` is started from a shell
//! that holds an unrelated pipe on fd 9 (as a shell under `make -j`, a CI runner or an IDE
//! terminal does), whose other end this test keeps.
//!
//! The policy (README, "Inherited descriptors"): by default the job gets stdin, stdout and
//! stderr only, as under sudo, so fd 9 is closed in it and it moves; with `mrun --keep-fd 9`
//! it keeps fd 9, and then a move is refused with one sentence naming fd 9 and why, `mrunctl
//! status` (and `--json`) say so, and the log says so once. `mrun --each` jobs get the same.
//!
//! Build the binaries first: `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

/// `cmd` (an `mrun ...` command) started by a shell that first puts its stdin, the read end of
/// a pipe whose write end this test keeps, on fd 9 (`exec 9<&0 </dev/null`), as a shell under
/// `make -j` holds the jobserver pipe: a pipe shared with a process outside the job.
fn from_shell_holding_fd9(cmd: Command, state: &Path) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(r#"exec 9<&0 </dev/null; exec "$@""#)
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        sh.current_dir(dir);
    }
    sh.env("XDG_STATE_HOME", state);
    sh
}

/// The read end of `pipe`, as the stdin of the shell that moves it to fd 9.
fn fd9(pipe: &File) -> Input {
    Input::Stdio(pipe.try_clone().expect("dup of the pipe").into())
}

/// The hopper victim under `mrun EXTRA...`, started from a shell holding `pipe` on fd 9.
fn start_hopper(mrun: &Mrun, extra: &[&str], pipe: &File, state: &Path) -> Job {
    let sb = mrun.sandbox();
    let victim = sb.victim("hopper");
    let mut args: Vec<&OsStr> = extra.iter().skip(1).map(OsStr::new).collect();
    args.extend([
        victim.as_os_str(),
        sb.dir().as_os_str(),
        OsStr::new("handle"),
    ]);
    let cmd = match extra.first() {
        Some(first) => mrun.command(first, &args),
        None => mrun.command(&victim, &[sb.dir().as_os_str(), OsStr::new("handle")]),
    };
    let label = format!("hopper {}", extra.join(" "));
    let mut job = mrun.spawn_job(
        &label,
        from_shell_holding_fd9(cmd, state),
        fd9(pipe),
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    job
}

fn step(sb: &Sandbox, job: &mut Job, k: u32) {
    write_atomically(&sb.path(&format!("step-{k}")), "");
    let id = job.id;
    job.mrun
        .wait_for_stdout(&format!("STEP {k} PID {id} SYSPID {id} TID {id}\n"));
}

fn end(sb: &Sandbox, job: Job) {
    write_atomically(&sb.path("end"), "exit 0");
    let done = job.finish();
    done.assert_success();
    assert!(
        done.stdout_text().ends_with("EXIT 0\n"),
        "{}",
        done.describe()
    );
}

/// What `fd` of `pid` is (`pipe:[123]`), if open.
fn fd_target(pid: i32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

fn log_text(state: &Path) -> String {
    std::fs::read_to_string(state.join("mrun/mrun.log")).unwrap_or_default()
}

/// Default: fd 9 is closed in the job (the deputy keeps it to itself), and the job moves to
/// `local` and back home as any other; nothing about descriptors is logged.
#[test]
fn default_closes_an_inherited_pipe_and_the_job_moves() {
    let sb = Sandbox::new("fds-default");
    let mrun = Mrun::new(&sb);
    let state = sb.mkdir("state");
    let (read_end, _write_end) = pipe();
    let ours = fd_target(std::process::id() as i32, read_end.as_raw_fd()).expect("our pipe");
    let mut job = start_hopper(&mrun, &[], &read_end, &state);
    assert_eq!(
        fd_target(job.mrun_pid(), 9).as_deref(),
        Some(ours.as_str()),
        "the shell did not hand mrun the pipe on fd 9"
    );
    assert_eq!(
        fd_target(job.id as i32, 9),
        None,
        "the job inherited fd 9 although no --keep-fd asked for it"
    );
    let status = mrun.mrunctl(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let me = doc["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job"] == job.id))
        .unwrap_or_else(|| panic!("job {} not in {}", job.id, status.describe()));
    assert_eq!(me["shared_fds"], serde_json::json!([]), "{me}");
    assert!(me["cannot_move"].is_null(), "{me}");

    mrun.migrate_ok(&job, "local");
    job.assert_place(Place::Away);
    step(&sb, &mut job, 1);
    mrun.migrate_ok(&job, "home");
    job.assert_place(Place::Home);
    step(&sb, &mut job, 2);
    end(&sb, job);
    let log = log_text(&state);
    assert!(!log.contains("cannot move"), "{log}");
}

/// `--keep-fd 9`: the job holds the very pipe; a move is refused with one sentence naming fd 9
/// and why, the job stays at home untouched, `mrunctl status` and `--json` show it, the log
/// says it once (and the refused move, as every failed move).
#[test]
fn keep_fd_passes_the_pipe_on_and_the_job_cannot_move() {
    let sb = Sandbox::new("fds-keep");
    let mrun = Mrun::new(&sb);
    let state = sb.mkdir("state");
    let (read_end, _write_end) = pipe();
    let ours = fd_target(std::process::id() as i32, read_end.as_raw_fd()).expect("our pipe");
    let mut job = start_hopper(&mrun, &["--keep-fd", "9"], &read_end, &state);
    assert_eq!(
        fd_target(job.id as i32, 9).as_deref(),
        Some(ours.as_str()),
        "--keep-fd 9 did not pass the pipe on to the job"
    );

    for _ in 0..2 {
        let out = mrun.migrate(job.id, "local");
        // Refused (3), as every refusal: the job stays home untouched.
        out.assert_one_line_error(&["fd 9", "a pipe", "outside the job", "stays at home"])
            .assert_exit_code(3);
        job.assert_place(Place::Home);
    }
    step(&sb, &mut job, 1);

    let status = mrun.mrunctl(&["status"]);
    status.assert_success();
    let text = status.stdout_text();
    assert!(
        text.contains("cannot move: it holds fd 9 (a pipe) shared with a process outside the job"),
        "{}",
        status.describe()
    );
    let status = mrun.mrunctl(&["status", "--json"]);
    status.assert_success();
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let me = doc["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job"] == job.id))
        .unwrap_or_else(|| panic!("job {} not in {}", job.id, status.describe()));
    assert_eq!(
        me["shared_fds"],
        serde_json::json!([{"fd": 9, "what": "a pipe"}]),
        "{me}"
    );
    assert!(
        me["cannot_move"]
            .as_str()
            .is_some_and(|s| s.contains("fd 9")),
        "{me}"
    );

    let log = log_text(&state);
    let prefix = format!("job {} (", job.id);
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&prefix) && l.contains("cannot move: it holds fd 9 (a pipe)"))
        .collect();
    assert_eq!(
        said.iter()
            .filter(|l| !l.contains("migration failed"))
            .count(),
        1,
        "the log must say once that the job holds fd 9:\n{log}"
    );
    assert_eq!(
        said.iter()
            .filter(|l| l.contains("migration failed"))
            .count(),
        2,
        "each refused move is logged:\n{log}"
    );
    end(&sb, job);
}

/// `mrun --each` jobs follow the same policy: fd 9 closed by default, passed on with
/// `--keep-fd 9`.
#[test]
fn each_jobs_get_the_same_policy() {
    let sb = Sandbox::new("fds-each");
    let mrun = Mrun::new(&sb);
    let state = sb.mkdir("state");
    let (read_end, _write_end) = pipe();
    let script = r#"if [ -e /proc/$$/fd/9 ]; then echo "$0 kept"; else echo "$0 closed"; fi"#;
    for (extra, want) in [(&[][..], "closed"), (&["--keep-fd", "9"][..], "kept")] {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["--home", "sh", "-c", script, ":::", "a", "b"]);
        let cmd = from_shell_holding_fd9(mrun.command("--each", &args), &state);
        let done = Proc::spawn(
            format!("mrun --each {}", extra.join(" ")),
            cmd,
            fd9(&read_end),
            Output::Pipe,
        )
        .finish();
        done.assert_success();
        let text = done.stdout_text();
        for arg in ["a", "b"] {
            assert!(
                text.contains(&format!("{arg} {want}\n")),
                "{}",
                done.describe()
            );
        }
    }
}

/// fds 0-2 are always the job's own: `--keep-fd 2` is a usage error.
#[test]
fn keep_fd_below_3_is_a_usage_error() {
    let sb = Sandbox::new("fds-usage");
    let mrun = Mrun::new(&sb);
    let done = Proc::spawn(
        "mrun --keep-fd 2 true",
        mrun.command("--keep-fd", &["2", "true"]),
        Input::Null,
        Output::Pipe,
    )
    .finish();
    done.assert_exit_code(2);
    assert!(
        done.stderr_text().contains("always passed on"),
        "{}",
        done.describe()
    );
}
