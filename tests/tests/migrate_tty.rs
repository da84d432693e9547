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
    if std::process::Command::new("script").arg("--version").output().is_err() {
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
    cmd.args(["-qfec", &inner, "/dev/null"]).env_remove("XDG_RUNTIME_DIR");
    let mut term = Proc::spawn("script mrun python3", cmd, Input::Pipe, Output::Pipe);
    term.wait_for_stdout("tick 2 ");
    let job = descendants(term.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split('\0').next().is_some_and(|argv0| argv0.ends_with("python3")) && c.contains("tty.py"))
        })
        .expect("the job under script");
    let moved = mrun.migrate(job as u32, "local");
    assert!(moved.status.success(), "migration failed: {}", moved.describe());
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
        assert!(t.contains("tty=TrueTrue size=77x21"), "a tick without its terminal: {t:?}\n{out}");
    }
    assert!(out.contains("got <typed at home> tty=TrueTrue"), "the typed line did not reach the job on the node:\n{out}");
}
