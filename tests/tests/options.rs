//! The command-line contract around the image: `--leave-running`, `-o -` and `restore -`,
//! and what happens to the process when the image cannot be written.

mod common;

use common::*;
use std::ffi::OsStr;

/// With --leave-running the original finishes on its own with the full output, and the image
/// restores a copy that carries on from the checkpoint to the same end.
#[test]
fn leave_running_keeps_the_original() {
    let sb = Sandbox::new("leave-running");
    let checksum = sb.victim("checksum");
    let want = sb.run("checksum (uninterrupted)", &checksum, &["60"], Input::Null);
    want.assert_success();
    let want = want.stdout;

    let mut original = sb.spawn("checksum", &checksum, &["60"], Input::Null, Output::Pipe);
    original.wait_for_stdout_len(want.len() / 3);
    let image = sb.path("leave.img");
    sb.mrunctl()
        .checkpoint_with(original.pid(), image.as_os_str(), &["--leave-running"], &[])
        .assert_success();
    assert!(
        original.try_status().is_none(),
        "the original ended despite --leave-running"
    );
    assert!(
        matches!(process_state(original.pid()), Some('R') | Some('S')),
        "the original is left in state {:?}",
        process_state(original.pid())
    );
    assert_eq!(
        tracer_pid(original.pid()),
        Some(0),
        "the original is still traced"
    );

    let restored = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    let original = original.finish();
    original.assert_success();
    assert_same_bytes(
        "the original after --leave-running",
        &original.stdout,
        &want,
    );

    restored.assert_success();
    let copy = &restored.stdout;
    assert!(
        !copy.is_empty() && copy.len() < want.len() && want.ends_with(copy),
        "the restored copy's output is not a proper suffix of the full output: {}",
        restored.describe()
    );
    let start = want.len() - copy.len();
    assert_eq!(want[start - 1], b'\n', "the restored copy starts mid-line");
}

/// `checkpoint -o -` piped straight into `restore -`; the restored process gets /dev/null as
/// stdin, so a read() it was blocked in now sees end of file.
#[test]
fn checkpoint_to_stdout_streamed_into_restore_from_stdin() {
    let sb = Sandbox::new("stream");
    let mut victim = sb.spawn_victim("stdin_reader", &["eof"], Input::Pipe);
    victim.wait_for_stdout("READY\n");
    wait_until_sleeping(victim.pid());

    let (read_end, write_end) = pipe();
    let restore = sb
        .mrunctl()
        .restore_from_stdin(Input::Stdio(read_end.into()), Output::Pipe);
    let mut cmd = sb.mrunctl().command();
    cmd.arg("checkpoint")
        .arg(victim.pid().to_string())
        .arg("-o")
        .arg("-");
    let checkpoint = Proc::spawn(
        "mrunctl checkpoint -o -",
        cmd,
        Input::Null,
        Output::Stdio(write_end.into()),
    );
    let checkpoint = checkpoint.finish();
    checkpoint.assert_success();
    victim.close_stdin();
    victim.finish().assert_signal(libc::SIGKILL);

    let restored = restore.finish();
    restored.assert_success();
    let text = restored.stdout_text();
    assert!(
        text.contains("PASS stdin at end of file") && text.contains("ALL PASS"),
        "{}",
        restored.describe()
    );
}

/// `-o -` into a file, then `restore -` reading that file on stdin.
#[test]
fn checkpoint_to_stdout_file_then_restore_from_stdin() {
    let sb = Sandbox::new("stdout-file");
    let go = sb.path("go");
    let mut victim = sb.spawn_victim("signals", &[&go], Input::Null);
    victim.wait_for_stdout("READY\n");
    let image = sb.path("stdout.img");
    let mut cmd = sb.mrunctl().command();
    cmd.arg("checkpoint")
        .arg(victim.pid().to_string())
        .arg("-o")
        .arg("-");
    let checkpoint = Proc::spawn(
        "mrunctl checkpoint -o -",
        cmd,
        Input::Null,
        Output::File(image.clone()),
    );
    checkpoint.finish().assert_success();
    victim.finish().assert_signal(libc::SIGKILL);
    assert!(
        std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0) > 0,
        "nothing was written to stdout"
    );

    sb.touch("go");
    let restored = sb
        .mrunctl()
        .restore_from_stdin(Input::File(image), Output::Pipe)
        .finish();
    restored.assert_success();
    assert!(
        restored.stdout_text().contains("ALL PASS"),
        "{}",
        restored.describe()
    );
}

/// Starts a ticker for the tests where the checkpoint cannot complete.
fn ticker(sb: &Sandbox) -> Proc {
    let stop = sb.path("stop");
    let mut victim = sb.spawn_victim(
        "refuse",
        &[OsStr::new("plain"), stop.as_os_str()],
        Input::Null,
    );
    victim.wait_for_stdout("tick 2\n");
    victim
}

/// The ticker survived a failed checkpoint: it is not stopped or traced, keeps ticking and ends
/// normally.
fn assert_ticker_survived(sb: &Sandbox, mut victim: Proc) {
    let pid = victim.pid();
    assert!(
        victim.try_status().is_none(),
        "the process died: {}",
        victim.stdout_text()
    );
    assert!(
        matches!(process_state(pid), Some('R') | Some('S')),
        "state {:?}",
        process_state(pid)
    );
    assert_eq!(tracer_pid(pid), Some(0), "still traced");
    let seen = victim.stdout_text().matches("tick ").count();
    victim.wait_for_stdout(&format!("tick {}\n", seen + 3));
    sb.touch("stop");
    let done = victim.finish();
    assert!(
        done.status.success() && done.stdout_text().contains("ALL PASS"),
        "{}",
        done.describe()
    );
}

#[test]
fn unwritable_image_path_leaves_the_process_running() {
    let sb = Sandbox::new("unwritable");
    let victim = ticker(&sb);
    let out = sb
        .mrunctl()
        .checkpoint(victim.pid(), &sb.path("no-such-dir/image.img"));
    out.assert_one_line_error(&["no-such-dir"]);
    assert_ticker_survived(&sb, victim);
}

#[test]
fn image_to_a_closed_pipe_leaves_the_process_running() {
    let sb = Sandbox::new("closed-pipe");
    let victim = ticker(&sb);
    let (read_end, write_end) = pipe();
    drop(read_end);
    let mut cmd = sb.mrunctl().command();
    cmd.arg("checkpoint")
        .arg(victim.pid().to_string())
        .arg("-o")
        .arg("-");
    let out = Proc::spawn(
        "mrunctl checkpoint -o - (closed)",
        cmd,
        Input::Null,
        Output::Stdio(write_end.into()),
    )
    .finish();
    assert!(
        !out.status.success(),
        "checkpoint into a closed pipe succeeded: {}",
        out.describe()
    );
    assert!(
        !out.stderr_text().contains("panicked at"),
        "{}",
        out.describe()
    );
    assert_ticker_survived(&sb, victim);
}
