//! A job that runs in a real terminal at home (a pty made by `script`) still has a terminal
//! after it moves: the node gives it a pty of the same size, keys typed at home reach it, and
//! its output arrives intact.

mod common;

use common::*;

const PROGRAM: &str = r#"
import os, sys, time
for i in range(60):
    size = os.get_terminal_size(1)
    print(f"tick {i} tty={os.isatty(0)}{os.isatty(1)} size={size.columns}x{size.lines}", flush=True)
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
line = sys.stdin.readline()
print(f"got <{line.strip()}> tty={os.isatty(0)}{os.isatty(1)}", flush=True)
"#;

fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[test]
fn terminal_job_keeps_its_terminal_on_the_node() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) is needed for this test: apt-get install bsdutils");
    }
    let sb = Sandbox::new("tty-local");
    let mrun = Mrun::new(&sb);
    let prog = sb.path("tty.py");
    std::fs::write(&prog, PROGRAM).expect("write the program");
    let stop = sb.path("stop");
    let mrun_exe = sb.program(&mrun_path());
    let inner = format!(
        "stty cols 77 rows 21; exec {} {} {} {}",
        mrun_exe.display(),
        python(),
        prog.display(),
        stop.display()
    );
    let mut cmd = sb.command("script");
    cmd.args(["-qfec", &inner, "/dev/null"])
        .env_remove("XDG_RUNTIME_DIR");
    let mut term = Proc::spawn("script mrun python3", cmd, Input::Pipe, Output::Pipe);
    term.wait_for_stdout("tick 2 ");
    let job = descendants(term.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split('\0')
                    .next()
                    .is_some_and(|argv0| argv0.ends_with("python3"))
                    && c.contains("tty.py")
            })
        })
        .expect("the job under script");
    let moved = mrun.migrate(job as u32, "local");
    assert!(
        moved.status.success(),
        "migration failed: {}",
        moved.describe()
    );
    let before = term.stdout_len();
    wait_until(TIMEOUT, || term.stdout_len() > before + 40);
    std::fs::write(&stop, "").expect("stop file");
    term.wait_for_stdout("tick");
    std::thread::sleep(std::time::Duration::from_millis(300));
    term.write_stdin(b"typed at home\r");
    let done = term.finish();
    let out = done.stdout_text();
    assert!(done.status.success(), "{}", done.describe());
    let ticks: Vec<&str> = out.lines().filter(|l| l.contains("tick ")).collect();
    assert!(ticks.len() > 4, "too few ticks: {out}");
    for t in &ticks {
        assert!(
            t.contains("tty=TrueTrue size=77x21"),
            "a tick without its terminal: {t:?}\n{out}"
        );
    }
    assert!(
        out.contains("got <typed at home> tty=TrueTrue"),
        "the typed line did not reach the job on the node:\n{out}"
    );
}

const COUNTER: &str = r#"
import os, sys, time
for i in range(600):
    print(f"count {i}", flush=True)
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.05)
line = sys.stdin.readline()
print(f"got <{line.strip()}>", flush=True)
"#;

/// Python processes running `script_path` (the job: at home, or restored below an agent; not
/// the mrun that started it) and their states.
fn job_states(script_path: &std::path::Path) -> Vec<(i32, Option<char>)> {
    let needle = script_path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                        c.split('\0')
                            .next()
                            .is_some_and(|argv0| argv0.ends_with("python3"))
                            && c.split('\0').any(|a| a == needle)
                    })
                })
                .map(|p| (p, process_state(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// The processes of the job's process group (that of the counter: with `tree`, `sh`, the
/// counter and `cat`), wherever the job runs, and their states.
fn group_states(script_path: &std::path::Path) -> Vec<(i32, Option<char>)> {
    let Some(group) = job_states(script_path)
        .first()
        .and_then(|(p, _)| stat_field(*p, 5))
    else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|p| stat_field(*p, 5) == Some(group))
                .map(|p| (p, process_state(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat, after the command name.
fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .nth(n.checked_sub(3)?)?
        .parse()
        .ok()
}

/// An interactive bash (job control on) in a pty made by `script`, which has run the counter
/// under mrun (with `tree`, as `sh -c 'python3 COUNTER | cat'`: a job of three processes in one
/// group) and whose job was then moved to the node `local` and prints there. Returns the
/// terminal, the counter's path and its stop file.
fn counter_away_from_a_shell(
    sb: &Sandbox,
    tree: bool,
) -> (Proc, std::path::PathBuf, std::path::PathBuf) {
    let mrun = Mrun::new(sb);
    let prog = sb.path("counter.py");
    std::fs::write(&prog, COUNTER).expect("write the program");
    let stop = sb.path("stop");
    let mrun_exe = sb.program(&mrun_path());
    let mut cmd = sb.command("script");
    cmd.args(["-qfec", "bash --norc --noprofile -i", "/dev/null"])
        .env_remove("XDG_RUNTIME_DIR")
        .env("TERM", "dumb");
    let mut term = Proc::spawn("script bash -i", cmd, Input::Pipe, Output::Pipe);
    // A prompt of our own, to wait for (the echo of this line shows it quoted, not bare).
    term.write_stdin(b"PS1='shell''$ '\r");
    term.wait_for_stdout("shell$ ");
    let counter = format!("{} {} {}", python(), prog.display(), stop.display());
    let command = if tree {
        format!("sh -c '{counter} | cat'")
    } else {
        counter
    };
    term.write_stdin(format!("{} {command}\r", mrun_exe.display()).as_bytes());
    term.wait_for_stdout("count 3\r\n");
    let counter_pid = job_states(&prog)
        .first()
        .map(|(p, _)| *p)
        .expect("the job under the shell");
    // The job is the root of the tree: the counter's parent `sh`.
    let job = if tree {
        stat_field(counter_pid, 4).expect("the counter's parent") as i32
    } else {
        counter_pid
    };
    let moved = mrun.migrate(job as u32, "local");
    assert!(
        moved.status.success(),
        "migration failed: {}",
        moved.describe()
    );
    let before = term.stdout_len();
    assert!(
        wait_until(TIMEOUT, || term.stdout_len() > before + 40),
        "no output from the job on the node"
    );
    (term, prog, stop)
}

/// In an interactive shell with job control, ^Z typed while the job runs away stops it there
/// and gives the shell its terminal back, as for a job at home; `fg` resumes it on the node,
/// with the terminal the job's again.
#[test]
fn ctrl_z_while_away_stops_the_job_and_fg_resumes_it() {
    ctrl_z_while_away("tty-ctrl-z", false);
}

/// The same for a job of three processes (`sh`, the counter, `cat`): every one stops, every
/// one resumes.
#[test]
fn ctrl_z_while_away_stops_a_tree_and_fg_resumes_it() {
    ctrl_z_while_away("tty-ctrl-z-tree", true);
}

fn ctrl_z_while_away(name: &str, tree: bool) {
    let sb = Sandbox::new(name);
    let (mut term, prog, stop) = counter_away_from_a_shell(&sb, tree);

    // Keys reach the node's pty (it echoes them), then ^Z.
    term.write_stdin(b"xyzzy");
    term.wait_for_stdout("xyzzy");
    term.write_stdin(b"\x1a");
    let shown = wait_until(TIMEOUT, || term.stdout_text().contains("Stopped"));
    assert!(
        shown,
        "the shell never showed the job stopped; the job's processes (pid, state): {:?}\n{}",
        job_states(&prog),
        term.stdout_text()
    );
    let stopped = wait_until(TIMEOUT, || {
        let group = group_states(&prog);
        group.len() == if tree { 3 } else { 1 } && group.iter().all(|(_, s)| *s == Some('T'))
    });
    assert!(
        stopped,
        "the job on the node did not stop: {:?}\n{}",
        group_states(&prog),
        term.stdout_text()
    );
    let prompt = wait_until(TIMEOUT, || {
        term.stdout_text()
            .rsplit_once("Stopped")
            .is_some_and(|(_, after)| after.contains("shell$ "))
    });
    assert!(prompt, "no prompt after the stop:\n{}", term.stdout_text());

    let at_stop = term.stdout_len();
    term.write_stdin(b"fg\r");
    let resumed = wait_until(TIMEOUT, || {
        let out = term.stdout_bytes();
        String::from_utf8_lossy(&out[at_stop.min(out.len())..]).contains("count ")
    });
    assert!(
        resumed,
        "fg did not resume the job: {:?}\n{}",
        job_states(&prog),
        term.stdout_text()
    );
    std::fs::write(&stop, "").expect("stop file");
    std::thread::sleep(std::time::Duration::from_millis(300));
    term.write_stdin(b"typed after fg\r");
    term.wait_for_stdout("got <typed after fg>");
    // The shell's prompt after the job ended (typed ahead of it, `exit` could reach the job).
    let prompt = wait_until(TIMEOUT, || {
        let out = term.stdout_text();
        out.rsplit_once("got <typed after fg>")
            .is_some_and(|(_, after)| after.contains("shell$ "))
    });
    assert!(
        prompt,
        "no prompt after the job ended:\n{}",
        term.stdout_text()
    );
    term.write_stdin(b"exit\r");
    let done = term.finish();
    assert!(done.status.success(), "{}", done.describe());
}

/// ^C typed while the job runs away ends it there, and the shell sees it end by SIGINT (130),
/// as for a job at home.
#[test]
fn ctrl_c_while_away_ends_the_job_by_sigint() {
    ctrl_c_while_away("tty-ctrl-c", false);
}

/// The same for a job of three processes: ^C ends every one.
#[test]
fn ctrl_c_while_away_ends_a_tree_by_sigint() {
    ctrl_c_while_away("tty-ctrl-c-tree", true);
}

fn ctrl_c_while_away(name: &str, tree: bool) {
    let sb = Sandbox::new(name);
    let (mut term, prog, _stop) = counter_away_from_a_shell(&sb, tree);
    let group = group_states(&prog);
    assert_eq!(
        group.len(),
        if tree { 3 } else { 1 },
        "the job's group: {group:?}"
    );
    term.write_stdin(b"\x03");
    let ended = wait_until(TIMEOUT, || {
        group
            .iter()
            .all(|(p, _)| !matches!(process_state(*p), Some(s) if s != 'Z'))
    });
    assert!(
        ended,
        "^C did not end the job on the node: {:?}\n{}",
        group_states(&prog),
        term.stdout_text()
    );
    let prompt = wait_until(TIMEOUT, || {
        term.stdout_text()
            .rsplit_once("^C")
            .is_some_and(|(_, after)| after.contains("shell$ "))
    });
    assert!(prompt, "no prompt after ^C:\n{}", term.stdout_text());
    term.write_stdin(b"echo status=$?\r");
    term.wait_for_stdout("status=130");
    term.write_stdin(b"exit\r");
    let done = term.finish();
    assert!(done.status.success(), "{}", done.describe());
}
