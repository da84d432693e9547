//! `mrun --each`: a batch of ordinary jobs, one per argument, like GNU parallel: grouped
//! output, the exit status counting failures, the job log, progress lines, arguments from
//! stdin, the limit on jobs at once and stopping on a signal. No nodes: every job runs at home.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

/// The directory `mrun` and `mrunctl` get as `XDG_RUNTIME_DIR` (job sockets below it).
fn runtime_dir(sb: &Sandbox) -> std::path::PathBuf {
    sb.mkdir("runtime")
}

/// `mrun --each ARGS...` prepared in `sb`: HOME is the sandbox (no configuration file), no
/// MRUN_NODES, job sockets in the sandbox.
fn each_command(sb: &Sandbox, args: &[&str]) -> std::process::Command {
    let mrun = Mrun::new(sb).with_runtime_dir(RuntimeDir::At(runtime_dir(sb)));
    let mut cmd = mrun.command("--each", args);
    cmd.env("HOME", sb.dir())
        .env_remove("MRUN_NODES")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

/// Runs `mrun --each ARGS...` to its end.
fn each(sb: &Sandbox, args: &[&str], stdin: Input) -> Finished {
    let cmd = each_command(sb, args);
    Proc::spawn(
        format!("mrun --each {}", args.join(" ")),
        cmd,
        stdin,
        Output::Pipe,
    )
    .finish()
}

/// The lines of `text` that jobs wrote (not mrun's own `mrun: ` lines).
fn job_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with("mrun: ")).collect()
}

/// Asserts `lines` are the blocks `"{arg} {stream} 1..=3"`, one per arg of `args`, each in one
/// piece and in order inside, in any order between them.
fn assert_grouped(what: &str, lines: &[&str], stream: &str, args: &[&str], out: &Finished) {
    assert_eq!(lines.len(), 3 * args.len(), "{what}: {}", out.describe());
    let mut seen = BTreeSet::new();
    for block in lines.chunks(3) {
        let arg = block[0].split(' ').next().unwrap_or_default();
        let want: Vec<String> = (1..=3).map(|i| format!("{arg} {stream} {i}")).collect();
        assert_eq!(
            block,
            want.as_slice(),
            "{what}: a job's output is split up: {}",
            out.describe()
        );
        seen.insert(arg.to_string());
    }
    let want: BTreeSet<String> = args.iter().map(|a| a.to_string()).collect();
    assert_eq!(seen, want, "{what}: {}", out.describe());
}

/// Every job succeeds: exit 0, and each job's stdout and stderr come in one piece even though
/// the jobs run at the same time and write a line at a time.
#[test]
fn outputs_are_grouped_per_job_and_success_exits_zero() {
    let sb = Sandbox::new("each-grouped");
    let script = "for i in 1 2 3; do echo $0 out $i; echo $0 err $i >&2; sleep 0.1; done";
    let args = ["a", "b", "c"];
    let mut words = vec!["-j", "3", "sh", "-c", script, ":::"];
    words.extend(args);
    let out = each(&sb, &words, Input::Null);
    out.assert_success();
    let stdout = out.stdout_text();
    let stderr = out.stderr_text();
    assert_grouped("stdout", &job_lines(&stdout), "out", &args, &out);
    assert_grouped("stderr", &job_lines(&stderr), "err", &args, &out);
    assert_eq!(
        stderr.lines().last(),
        Some("mrun: 3 jobs: 3 succeeded"),
        "{}",
        out.describe()
    );
}

/// The exit status is the number of failed jobs, and the summary names them.
#[test]
fn failed_jobs_are_counted_in_the_exit_status_and_named() {
    let sb = Sandbox::new("each-failed");
    let out = each(
        &sb,
        &["sh", "-c", "exit $0", ":::", "0", "3", "0", "5"],
        Input::Null,
    );
    out.assert_exit_code(2);
    let summary = out
        .stderr_text()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        summary.starts_with("mrun: 4 jobs: 2 succeeded, 2 failed: ")
            && summary.contains("sh -c exit $0 3 (exit 3)")
            && summary.contains("sh -c exit $0 5 (exit 5)"),
        "summary {summary:?} in {}",
        out.describe()
    );
}

/// `--joblog` writes GNU parallel's format: the header, then one line of 9 tab-separated fields
/// per job, with the exit value and the signal in their columns.
#[test]
fn joblog_has_gnu_parallels_format() {
    let sb = Sandbox::new("each-joblog");
    let log = sb.path("jobs.log");
    let log_arg = log.to_str().expect("a UTF-8 sandbox path");
    let script = "case $0 in kill) kill -9 $$;; esac; exit $0";
    let out = each(
        &sb,
        &[
            "--joblog", log_arg, "sh", "-c", script, ":::", "0", "3", "kill",
        ],
        Input::Null,
    );
    out.assert_exit_code(2);
    let text = std::fs::read_to_string(&log).expect("the job log was written");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"),
        "{text}"
    );
    let mut rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "one line per job: {text}");
    rows.sort_by_key(|r| r[0].parse::<u32>().unwrap_or(0));
    for (i, (row, arg)) in rows.iter().zip(["0", "3", "kill"]).enumerate() {
        assert_eq!(row.len(), 9, "9 fields: {row:?}");
        assert_eq!(row[0], (i + 1).to_string(), "Seq in argument order: {text}");
        assert_eq!(row[1], "home", "Host: {text}");
        let (secs, millis) = row[2].split_once('.').expect("Starttime has decimals");
        assert!(
            secs.parse::<u64>().is_ok() && millis.len() == 3 && millis.parse::<u32>().is_ok(),
            "Starttime {:?} is unix seconds with 3 decimals",
            row[2]
        );
        assert!(
            row[3].len() >= 10
                && row[3].trim_start().parse::<f64>().is_ok()
                && row[3].split_once('.').map(|(_, d)| d.len()) == Some(3),
            "JobRuntime {:?} is %10.3f",
            row[3]
        );
        assert_eq!((row[4], row[5]), ("0", "0"), "Send and Receive: {text}");
        assert_eq!(row[8], format!("sh -c {script} {arg}"), "Command: {text}");
    }
    let status: Vec<(&str, &str)> = rows.iter().map(|r| (r[6], r[7])).collect();
    assert_eq!(
        status,
        [("0", "0"), ("3", "0"), ("0", "9")],
        "Exitval and Signal: {text}"
    );
}

/// With stderr not a terminal: one plain progress line per job, then the summary, and no
/// terminal control sequences.
#[test]
fn progress_off_a_terminal_is_one_plain_line_per_job() {
    let sb = Sandbox::new("each-progress");
    let out = each(&sb, &["echo", "x", "y", "z"], Input::Null);
    out.assert_success();
    let stderr = out.stderr_text();
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "{}",
        out.describe()
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.describe());
    let mut jobs = BTreeSet::new();
    for (i, line) in lines[..3].iter().enumerate() {
        let prefix = format!("mrun: [{}/3] done echo ", i + 1);
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
        let (arg, how) = rest
            .split_once(' ')
            .expect("the job's argument, then how it ended");
        assert!(
            how.starts_with("(exit 0, ") && how.ends_with(" s, on home)"),
            "{line:?}"
        );
        jobs.insert(arg.to_string());
    }
    assert_eq!(
        jobs,
        BTreeSet::from(["x".to_string(), "y".to_string(), "z".to_string()])
    );
    assert_eq!(lines[3], "mrun: 3 jobs: 3 succeeded");
    let mut stdout: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    stdout.sort();
    assert_eq!(stdout, ["x", "y", "z"]);
}

/// With no argument after the command and its options (and only then), each non-empty line
/// of stdin is one job's argument.
#[test]
fn arguments_come_from_stdin_one_per_line() {
    let sb = Sandbox::new("each-stdin");
    let input = sb.path("args");
    std::fs::write(&input, "first\n\nsecond word\nthird\n").expect("write the arguments");
    let out = each(&sb, &["echo", "got"], Input::File(input));
    // A word after the command is a job's argument: stdin is not read.
    out.assert_success();
    assert_eq!(out.stdout_text(), "got\n", "{}", out.describe());

    let input = sb.path("args");
    let out = each(&sb, &["echo"], Input::File(input));
    out.assert_success();
    let mut stdout: Vec<String> = out.stdout_text().lines().map(str::to_string).collect();
    stdout.sort();
    assert_eq!(
        stdout,
        ["first", "second word", "third"],
        "{}",
        out.describe()
    );
    assert_eq!(
        out.stderr_text().lines().last(),
        Some("mrun: 3 jobs: 3 succeeded")
    );
}

/// Reads the start/end markers the jobs appended to `log`.
fn markers(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("read {}: {e}", log.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// `-j 1` runs one job at a time, in argument order: each job's end marker comes before the
/// next job's start marker.
#[test]
fn one_job_at_a_time_never_overlaps() {
    let sb = Sandbox::new("each-j1");
    let log = sb.path("markers");
    let script = format!(
        "echo start $0 >> {0}; sleep 0.2; echo end $0 >> {0}",
        log.display()
    );
    let out = each(
        &sb,
        &["-j", "1", "sh", "-c", &script, ":::", "a", "b", "c", "d"],
        Input::Null,
    );
    out.assert_success();
    let want: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|x| [format!("start {x}"), format!("end {x}")])
        .collect();
    assert_eq!(markers(&log), want, "{}", out.describe());
}

/// SIGTERM to `mrun --each`: the running job gets it, no further job starts, and the exit
/// status is 128 + 15.
#[test]
fn sigterm_stops_the_batch() {
    let sb = Sandbox::new("each-sigterm");
    let log = sb.path("markers");
    let script = format!("echo start $0 >> {}; exec sleep 60", log.display());
    let cmd = each_command(&sb, &["-j", "1", "sh", "-c", &script, ":::", "a", "b", "c"]);
    let proc = Proc::spawn("mrun --each (SIGTERM)", cmd, Input::Null, Output::Pipe);
    assert!(
        wait_until(TIMEOUT, || log.exists() && markers(&log) == ["start a"]),
        "the first job never started: {}",
        proc.stderr_text()
    );
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(proc.pid(), libc::SIGTERM) };
    let out = proc.finish();
    out.assert_exit_code(143);
    assert_eq!(
        markers(&log),
        ["start a"],
        "a job started after SIGTERM: {}",
        out.describe()
    );
    let summary = out
        .stderr_text()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        summary,
        "mrun: 3 jobs: 0 succeeded, 2 not started (stopped by SIGTERM), 1 failed: sh -c "
            .to_string()
            + &script
            + " a (killed by SIGTERM)",
        "{}",
        out.describe()
    );
}

/// `--home` reaches every job: each runs as a deputy that is our child (the pid the progress
/// display matches places by) and is pinned home.
#[test]
fn home_pins_every_job_and_jobs_are_our_children() {
    let sb = Sandbox::new("each-home");
    let log = sb.path("markers");
    let script = format!("echo start $0 >> {}; exec sleep 60", log.display());
    let cmd = each_command(
        &sb,
        &["--home", "-j", "2", "sh", "-c", &script, ":::", "a", "b"],
    );
    let proc = Proc::spawn("mrun --each --home", cmd, Input::Null, Output::Pipe);
    let mut status = std::process::Command::new(mrunctl_path());
    status
        .args(["status", "--json"])
        .env("XDG_RUNTIME_DIR", runtime_dir(&sb))
        .env("HOME", sb.dir())
        .env_remove("MRUN_NODES")
        .env_remove("XDG_CONFIG_HOME");
    let mut jobs = Vec::new();
    let listed = wait_until(TIMEOUT, || {
        let out = status.output().expect("run mrunctl status --json");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let listed = doc["jobs"].as_array().cloned().unwrap_or_default();
        jobs = listed
            .iter()
            .filter_map(|j| j["deputy_pid"].as_i64())
            .map(|p| p as i32)
            .collect();
        jobs.len() == 2 && listed.iter().all(|j| j["pinned_home"] == true)
    });
    let deputies = children(proc.pid());
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(proc.pid(), libc::SIGTERM) };
    let out = proc.finish();
    assert!(
        listed,
        "mrunctl status never showed two pinned jobs: {}",
        out.describe()
    );
    jobs.sort();
    let mut deputies = deputies;
    deputies.sort();
    assert_eq!(
        jobs,
        deputies,
        "the jobs' deputies are not mrun --each's children: {}",
        out.describe()
    );
    out.assert_exit_code(143);
}

/// Text files `a.txt`, `b.txt`, `c.txt` in the sandbox (named relative to it, the jobs' cwd),
/// each with contents of its own.
fn text_files(sb: &Sandbox) -> Vec<(String, Vec<u8>)> {
    ["a", "b", "c"]
        .iter()
        .map(|name| {
            let text: String = (0..2000).map(|i| format!("{name} line {i}\n")).collect();
            let file = format!("{name}.txt");
            std::fs::write(sb.path(&file), &text).expect("write a text file");
            (file, text.into_bytes())
        })
        .collect()
}

/// Each file was replaced by its `.gz`, compressed at level 9 (gzip writes 2 in the header's
/// XFL byte for it, 0 at the default level) and holding exactly its bytes.
fn assert_gzipped_at_level_9(sb: &Sandbox, files: &[(String, Vec<u8>)], out: &Finished) {
    for (file, text) in files {
        assert!(
            !sb.path(file).exists(),
            "{file} was not compressed: {}",
            out.describe()
        );
        let gz = sb.path(&format!("{file}.gz"));
        let packed = std::fs::read(&gz)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", gz.display(), out.describe()));
        assert_eq!(
            packed.get(8),
            Some(&2),
            "{file}.gz was not compressed with -9: {}",
            out.describe()
        );
        let unpacked = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&gz)
            .output()
            .expect("run gzip -dc");
        assert_same_bytes(&format!("{file}.gz unpacked"), &unpacked.stdout, text);
    }
}

/// `mrun --each gzip -9 a.txt b.txt c.txt`, as users type it first: `-9` goes to every job
/// (it was a job of its own, compressing /dev/null to stdout, and the files got level 6).
#[test]
fn leading_options_are_fixed_arguments_of_every_job() {
    let sb = Sandbox::new("each-leading-options");
    let files = text_files(&sb);
    let out = each(&sb, &["gzip", "-9", "a.txt", "b.txt", "c.txt"], Input::Null);
    out.assert_success();
    assert_gzipped_at_level_9(&sb, &files, &out);
    assert!(
        out.stdout.is_empty(),
        "a job wrote to stdout: {}",
        out.describe()
    );
    assert_eq!(
        out.stderr_text().lines().last(),
        Some("mrun: 3 jobs: 3 succeeded"),
        "{}",
        out.describe()
    );
}

/// `ls *.txt | mrun --each gzip -9`: the option goes to every job, one job per line of the
/// pipe (it was one job, `gzip -9`, and nothing was compressed).
#[test]
fn fixed_options_combine_with_the_lines_of_stdin() {
    let sb = Sandbox::new("each-options-stdin");
    let files = text_files(&sb);
    let mut proc = Proc::spawn(
        "ls *.txt | mrun --each gzip -9",
        each_command(&sb, &["gzip", "-9"]),
        Input::Pipe,
        Output::Pipe,
    );
    proc.write_stdin(b"a.txt\nb.txt\nc.txt\n");
    proc.close_stdin();
    let out = proc.finish();
    out.assert_success();
    assert_gzipped_at_level_9(&sb, &files, &out);
    assert!(
        out.stdout.is_empty(),
        "a job wrote to stdout: {}",
        out.describe()
    );
    assert_eq!(
        out.stderr_text().lines().last(),
        Some("mrun: 3 jobs: 3 succeeded"),
        "{}",
        out.describe()
    );
}

/// `:::: FILE` (GNU parallel's): the arguments are the lines of FILE, `-` for stdin, whatever
/// the fixed words end with (`sh -c SCRIPT` alone would be refused: is SCRIPT `-c`'s value?).
#[test]
fn a_file_of_arguments_follows_four_colons() {
    let sb = Sandbox::new("each-arg-file");
    let script = "gzip -9 \"$0\"";
    let files = text_files(&sb);
    let list = sb.path("list");
    std::fs::write(&list, "a.txt\n\nb.txt\nc.txt\n").expect("write the list");
    let out = each(&sb, &["sh", "-c", script, "::::", "list"], Input::Null);
    out.assert_success();
    assert_gzipped_at_level_9(&sb, &files, &out);

    for (file, _) in &files {
        std::fs::remove_file(sb.path(&format!("{file}.gz"))).expect("remove a .gz");
    }
    let files = text_files(&sb);
    let out = each(&sb, &["sh", "-c", script, "::::", "-"], Input::File(list));
    out.assert_success();
    assert_gzipped_at_level_9(&sb, &files, &out);
    assert_eq!(
        out.stderr_text().lines().last(),
        Some("mrun: 3 jobs: 3 succeeded"),
        "{}",
        out.describe()
    );

    let out = each(&sb, &["echo", "::::", "missing"], Input::Null);
    out.assert_one_line_error(&["cannot read the jobs' arguments from missing: no such file"]);
    assert!(
        !out.stderr_text().contains("os error"),
        "{}",
        out.describe()
    );
}

/// `mrun --each -j 2 sort -o out a.txt b.txt`: `out` may be the value of `-o` or a job's file.
/// Refused before anything runs, in one sentence showing both commands with `:::` (and the
/// options given to mrun); the files are untouched (`sort -o a.txt` would have emptied them).
#[test]
fn an_option_that_may_take_the_next_word_is_refused_before_anything_runs() {
    let sb = Sandbox::new("each-ambiguous");
    let files = text_files(&sb);
    let out = each(
        &sb,
        &["-j", "2", "sort", "-o", "out", "a.txt", "b.txt"],
        Input::Null,
    );
    out.assert_one_line_error(&["mrun --each -j 2 sort -o out ::: a.txt b.txt"]);
    out.assert_exit_code(2);
    assert!(
        out.stderr_text()
            .contains("`mrun --each -j 2 sort -o ::: out a.txt b.txt` if it is an argument"),
        "{}",
        out.describe()
    );
    assert!(!sb.path("out").exists(), "a job ran: {}", out.describe());
    for (file, text) in &files {
        let now = std::fs::read(sb.path(file)).expect("the file is still there");
        assert_same_bytes(file, &now, text);
    }
}

/// `ls | mrun --each gzip -9 :::` ran no job and exited 0: nothing after `:::` is refused in
/// one sentence, and stdin is not read in its place.
#[test]
fn nothing_after_the_separator_is_refused() {
    let sb = Sandbox::new("each-empty-separator");
    let files = text_files(&sb);
    // The lines wait in the pipe before mrun starts: it may well end without reading them.
    let (read_end, mut write_end) = pipe();
    write_end
        .write_all(b"a.txt\nb.txt\nc.txt\n")
        .expect("fill the pipe");
    drop(write_end);
    let out = Proc::spawn(
        "ls | mrun --each gzip -9 :::",
        each_command(&sb, &["gzip", "-9", ":::"]),
        Input::Stdio(read_end.into()),
        Output::Pipe,
    )
    .finish();
    out.assert_one_line_error(&["nothing follows `:::`"]);
    out.assert_exit_code(2);
    for (file, text) in &files {
        let now = std::fs::read(sb.path(file)).expect("the file is still there");
        assert_same_bytes(file, &now, text);
    }
}

/// A pipeline that finds nothing (`find ... | mrun --each gzip` with no match) runs no job,
/// says so, and succeeds, as xargs -r and GNU parallel do.
#[test]
fn no_lines_on_stdin_run_no_job_and_say_so() {
    let sb = Sandbox::new("each-no-input");
    let input = sb.touch("nothing");
    let out = each(&sb, &["gzip", "-9"], Input::File(input));
    out.assert_success();
    assert_eq!(
        out.stderr_text(),
        "mrun: no jobs: the input had no non-empty line\n",
        "{}",
        out.describe()
    );
    assert!(out.stdout.is_empty(), "{}", out.describe());
}

/// `mrun --each ARGS...` on a terminal (a pty made by `script`, 120 columns wide) to its end:
/// its stdout is everything drawn on the terminal.
fn each_on_terminal(sb: &Sandbox, args: &[&str]) -> Finished {
    terminal_command(sb, args, Input::Null).finish()
}

/// `mrun --each ARGS...` started on a terminal (a pty made by `script`, 120 columns wide),
/// `stdin` typed at it.
fn terminal_command(sb: &Sandbox, args: &[&str], stdin: Input) -> Proc {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let inner = format!(
        "stty cols 120; exec {} --each {}",
        sb.program(&mrun_path()).display(),
        quoted.join(" ")
    );
    let mut cmd = sb.command("script");
    cmd.args(["-qfec", &inner, "/dev/null"])
        .env("HOME", sb.dir())
        .env("XDG_RUNTIME_DIR", runtime_dir(sb))
        .env_remove("MRUN_NODES")
        .env_remove("XDG_CONFIG_HOME");
    Proc::spawn(
        format!("script mrun --each {}", args.join(" ")),
        cmd,
        stdin,
        Output::Pipe,
    )
}

/// The progress bar's states as drawn: (jobs done, jobs in all, the ETA's text), terminal
/// control sequences taken out.
fn bar_states(drawn: &str) -> Vec<(usize, usize, String)> {
    let mut plain = String::new();
    let mut chars = drawn.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-letter.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .split(['\r', '\n'])
        .filter_map(|line| {
            let (_, rest) = line.split_once("mrun: ")?;
            let (_, eta) = rest.split_once("· ETA ")?;
            let count = rest.split_whitespace().find(|w| w.contains('/'))?;
            let (done, total) = count.split_once('/')?;
            Some((
                done.parse().ok()?,
                total.parse().ok()?,
                eta.trim().to_string(),
            ))
        })
        .collect()
}

/// `ETA 1m 05s` -> 65.
fn eta_seconds(text: &str) -> Option<u64> {
    let mut secs = 0;
    for part in text.split_whitespace() {
        let (n, unit) = part.split_at(part.find(|c: char| c.is_ascii_alphabetic())?);
        let n: u64 = n.parse().ok()?;
        secs += n * match unit {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return None,
        };
    }
    Some(secs)
}

/// On a terminal the ETA is `?` until a job has ended (it showed 0s), then an estimate that is
/// never 0 s while jobs remain and never more than the remaining rounds of jobs at the longest
/// run time seen (it grew to 82 minutes a minute before the end).
#[test]
fn the_eta_is_unknown_until_a_job_ends_then_plausible() {
    let sb = Sandbox::new("each-eta");
    let log = sb.path("jobs.log");
    let log_arg = log.to_str().expect("a UTF-8 sandbox path");
    let times = ["1", "1.5", "1", "0.5", "1", "1.5"];
    let slots = 2;
    let mut args = vec![
        "-j", "2", "--joblog", log_arg, "sh", "-c", "sleep $0", ":::",
    ];
    args.extend(times);
    let out = each_on_terminal(&sb, &args);
    out.assert_success();
    let drawn = out.stdout_text();
    assert!(
        drawn.contains("mrun: 6 jobs: 6 succeeded"),
        "{}",
        out.describe()
    );
    let longest = std::fs::read_to_string(&log)
        .expect("the job log")
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(3)?.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    let states = bar_states(&drawn);
    let bound = (times.len().div_ceil(slots) as f64 * longest).ceil() as u64 + 1;
    let mut estimates = 0;
    for (done, total, eta) in &states {
        assert_eq!(*total, times.len(), "{states:?}");
        if *done == 0 {
            assert_eq!(eta, "?", "an ETA before any job ended: {states:?}");
        } else if done < total && eta != "?" {
            let secs = eta_seconds(eta).unwrap_or_else(|| panic!("ETA {eta:?}: {states:?}"));
            assert!(secs > 0, "ETA 0 s with jobs left: {states:?}");
            assert!(
                secs <= bound,
                "ETA {eta} past {bound} s, the longest job ({longest} s) for each remaining round: {states:?}"
            );
            estimates += 1;
        }
    }
    assert!(
        states.iter().any(|(done, _, _)| *done == 0) && estimates > 0,
        "the bar showed no ETA before and after the first job ended: {states:?} in {}",
        out.describe()
    );
}

/// Jobs 1, 2, 3 that end in the inverse order, whatever the load: each waits until the job log
/// (written as jobs end) has the next one's line. Each writes a line to stdout and to stderr.
fn jobs_ending_in_inverse_order(sb: &Sandbox, keep_order: bool) -> Finished {
    let log = sb.path(if keep_order { "kept.log" } else { "ended.log" });
    let log = log.to_str().expect("a UTF-8 sandbox path");
    let script = format!(
        "next=$(($0 + 1)); if [ $next -le 3 ]; then \
         until cut -f1 {log} | grep -qx $next; do sleep 0.05; done; fi; \
         echo job $0 out; echo job $0 err >&2"
    );
    let mut args = vec!["-j", "3", "--joblog", log];
    if keep_order {
        args.push("-k");
    }
    args.extend(["sh", "-c", &script, ":::", "1", "2", "3"]);
    each(sb, &args, Input::Null)
}

/// `-k`: outputs come in the order of the arguments although the jobs, running at once, end in
/// the inverse order (as they are shown without `-k`); so do the progress lines.
#[test]
fn keep_order_shows_outputs_in_argument_order() {
    let sb = Sandbox::new("each-keep-order");
    let ended = jobs_ending_in_inverse_order(&sb, false);
    ended.assert_success();
    assert_eq!(
        ended.stdout_text(),
        "job 3 out\njob 2 out\njob 1 out\n",
        "{}",
        ended.describe()
    );

    let kept = jobs_ending_in_inverse_order(&sb, true);
    kept.assert_success();
    assert_eq!(
        kept.stdout_text(),
        "job 1 out\njob 2 out\njob 3 out\n",
        "{}",
        kept.describe()
    );
    let stderr = kept.stderr_text();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 7, "{}", kept.describe());
    for (i, pair) in lines[..6].chunks(2).enumerate() {
        let n = i + 1;
        assert_eq!(pair[0], format!("job {n} err"), "{}", kept.describe());
        assert!(
            pair[1].starts_with(&format!("mrun: [{n}/3] done sh -c "))
                && pair[1].contains(&format!(" {n} (exit 0, ")),
            "{}",
            kept.describe()
        );
    }
    assert_eq!(lines[6], "mrun: 3 jobs: 3 succeeded");
}

/// `mrun --each sh -c 'echo got $0' :::: -` typed at a terminal waits for the arguments there:
/// it says so at once (it sat silent), then runs one job per line typed, up to Ctrl-D.
#[test]
fn arguments_read_from_a_terminal_are_asked_for() {
    let sb = Sandbox::new("each-terminal-stdin");
    let mut term = terminal_command(&sb, &["sh", "-c", "echo got $0", "::::", "-"], Input::Pipe);
    term.wait_for_stdout("one per line; end with Ctrl-D");
    term.write_stdin(b"first\rsecond\r\x04");
    let out = term.finish();
    out.assert_success();
    let drawn = out.stdout_text();
    for want in [
        "got first\r\n",
        "got second\r\n",
        "mrun: 2 jobs: 2 succeeded",
    ] {
        assert!(drawn.contains(want), "{want:?} not in {}", out.describe());
    }
}
