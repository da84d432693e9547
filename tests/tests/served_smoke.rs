//! Home's files served to a node whose agent does not see them (its own mount namespace with
//! a tmpfs over the job's directory): the smallest job that reads and writes them.

mod common;

use common::*;
use std::ffi::OsStr;

/// The command that starts the node's agent in a mount namespace of its own where `dir` is an
/// empty tmpfs: a node that does not have home's `dir`.
fn agent_without(dir: &std::path::Path) -> String {
    format!(
        "unshare -m --propagation private sh -c 'mount -t tmpfs none {} && exec {}'",
        dir.display(),
        agent_path().display()
    )
}

#[test]
fn sort_reads_and_writes_home_files_from_a_node_that_lacks_them() {
    let sb = Sandbox::new("served-smoke");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let work = sb.mkdir("work");
    let lines: String = (0..20000)
        .map(|i| format!("line {}\n", (i * 7919) % 20000))
        .collect();
    std::fs::write(work.join("in.txt"), &lines).expect("write the input");
    let agent = RemoteAgent::Command(agent_without(&work));
    let m = SshMrun::new(&sb, &client, agent);
    let script = format!(
        "cd {} && echo READY && while [ ! -e go ]; do sleep 0.1; done; pwd; grep -c mrun-home /proc/self/mountinfo; sort in.txt > out.txt; wc -l < out.txt; cat in.txt | wc -c",
        work.display()
    );
    let mut job = m.start(
        "sort on a",
        "/bin/sh",
        &[OsStr::new("-c"), OsStr::new(&script)],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    m.mrun.migrate_ok(&job, "a");
    std::fs::write(work.join("go"), "").expect("write go");
    let done = job.finish();
    done.assert_success();
    let mut sorted: Vec<&str> = lines.lines().collect();
    sorted.sort();
    let want: String = sorted.iter().map(|l| format!("{l}\n")).collect();
    let got = std::fs::read_to_string(work.join("out.txt")).expect("read out.txt at home");
    assert!(
        got == want,
        "out.txt differs: {} bytes, want {}",
        got.len(),
        want.len()
    );
    assert_eq!(
        done.stdout_text(),
        format!("READY\n{}\n1\n20000\n{}\n", work.display(), lines.len()),
        "{}",
        done.describe()
    );
}

/// The same job moved home -> a -> b -> home while it works on home's files in between.
#[test]
fn a_shell_moves_home_a_b_home_on_home_files() {
    let sb = Sandbox::new("served-hops");
    let a = Node::start(&sb, "a");
    let b = Node::start(&sb, "b");
    let client = ClientHome::for_nodes(&sb, &[("a", &a), ("b", &b)]);
    let work = sb.mkdir("work");
    let lines: String = (0..5000)
        .map(|i| format!("row {}\n", (i * 31) % 5000))
        .collect();
    std::fs::write(work.join("in.txt"), &lines).expect("write the input");
    let agent = RemoteAgent::Command(agent_without(&work));
    let m = SshMrun::new(&sb, &client, agent);
    let wait = |f: &str| format!("while [ ! -e {f} ]; do sleep 0.05; done");
    let script = format!(
        "cd {} && echo READY && {} && sort in.txt > out.txt && echo ONE && {} && wc -l < out.txt >> log.txt && echo TWO && {} && cat log.txt && sort -c out.txt && echo DONE",
        work.display(),
        wait("go1"),
        wait("go2"),
        wait("go3"),
    );
    let mut job = m.start(
        "sh hopping",
        "/bin/sh",
        &[OsStr::new("-c"), OsStr::new(&script)],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    m.mrun.migrate_ok(&job, "a");
    std::fs::write(work.join("go1"), "").expect("go1");
    job.mrun.wait_for_stdout("ONE\n");
    m.mrun.migrate_ok(&job, "b");
    std::fs::write(work.join("go2"), "").expect("go2");
    job.mrun.wait_for_stdout("TWO\n");
    m.mrun.migrate_ok(&job, "home");
    std::fs::write(work.join("go3"), "").expect("go3");
    let done = job.finish();
    done.assert_success();
    assert_eq!(
        done.stdout_text(),
        "READY\nONE\nTWO\n5000\nDONE\n",
        "{}",
        done.describe()
    );
    assert_eq!(
        std::fs::read_to_string(work.join("log.txt")).expect("log.txt at home"),
        "5000\n"
    );
}

const TERMINAL_PROGRAM: &str = r#"
import os, sys, time
for i in range(80):
    size = os.get_terminal_size(1)
    print(f"tick {i} tty={os.isatty(0)}{os.isatty(1)} size={size.columns}x{size.lines} cwd={os.getcwd()} data={open('data.txt').read().strip()}", flush=True)
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
line = sys.stdin.readline()
print(f"got <{line.strip()}> tty={os.isatty(0)}{os.isatty(1)}", flush=True)
"#;

/// A job in a real terminal at home (a pty made by `script`), moved to a node that does not
/// have its directory: it keeps a terminal of the same size, keys typed at home reach it, and
/// it goes on reading home's file by a relative path.
#[test]
fn terminal_job_on_a_node_without_home_files() {
    let sb = Sandbox::new("tty-served");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let work = sb.mkdir("work");
    std::fs::write(work.join("data.txt"), "home's bytes\n").expect("write data.txt");
    let prog = work.join("tty.py");
    std::fs::write(&prog, TERMINAL_PROGRAM).expect("write the program");
    let stop = work.join("stop");
    let agent = agent_without(&work);
    let inner = format!(
        "cd {}; stty cols 77 rows 21; exec {} /usr/bin/python3 {} {}",
        work.display(),
        mrun_path().display(),
        prog.display(),
        stop.display()
    );
    let mut cmd = sb.command("script");
    cmd.args(["-qfec", &inner, "/dev/null"])
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", client.home())
        .env("MRUN_REMOTE_AGENT", &agent);
    let mut term = Proc::spawn("script mrun python3", cmd, Input::Pipe, Output::Pipe);
    term.wait_for_stdout("tick 2 ");
    let job = descendants(term.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split('\0').next().is_some_and(|a| a.ends_with("python3")) && c.contains("tty.py")
            })
        })
        .expect("the job under script");
    let mut ctl = std::process::Command::new(mrunctl_path());
    ctl.args(["migrate", &job.to_string(), "a"])
        .env("HOME", client.home())
        .env_remove("XDG_RUNTIME_DIR");
    let moved = ctl.output().expect("run mrunctl migrate");
    eprintln!(
        "migrate: {} {}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    let before = term.stdout_len();
    wait_until(TIMEOUT, || term.stdout_len() > before + 40);
    std::fs::write(&stop, "").expect("write the stop file");
    std::thread::sleep(std::time::Duration::from_millis(500));
    term.write_stdin(b"typed at home\r");
    let done = term.finish();
    let out = done.stdout_text();
    eprintln!(
        "{}",
        out.lines().rev().take(4).collect::<Vec<_>>().join("\n")
    );
    assert!(moved.status.success());
    assert!(out.contains("got <typed at home> tty=TrueTrue"), "{out}");
    assert!(
        out.lines()
            .filter(|l| l.contains("tick"))
            .all(|l| l.contains("data=home's bytes") && l.contains("size=77x21")),
        "{out}"
    );
}
