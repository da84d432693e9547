//! A restored process can itself be checkpointed and restored again: five hops in a row, each
//! taken from the process the previous `mrunctl restore` brought back, must still finish with
//! byte-exact output and the same pid.

mod common;

use common::*;

const HOPS: usize = 5;

#[test]
fn checksum_pipe_five_hops() {
    let sb = Sandbox::new("chain-checksum");
    migrate_pipe_output(
        &sb,
        "checksum (5 hops)",
        sb.victim("checksum"),
        &["80"],
        &[],
        HOPS,
    );
}

#[test]
fn static_checksum_pipe_five_hops() {
    let sb = Sandbox::new("chain-static");
    migrate_pipe_output(
        &sb,
        "checksum_static (5 hops)",
        sb.victim("checksum_static"),
        &["80"],
        &[],
        HOPS,
    );
}

#[test]
fn gzip_file_five_hops() {
    let sb = Sandbox::new("chain-gzip");
    let input = text_file(32 * MIB);
    migrate_file_output(
        &sb,
        "gzip -9 (5 hops)",
        r#"exec gzip -9 < "$1" > "$2""#,
        &input,
        HOPS,
        Progress::OutputGrows,
    );
}

#[test]
fn same_pid_after_five_hops() {
    let sb = Sandbox::new("chain-getpid");
    let go = sb.path("go");
    let mut current = sb.spawn_victim("getpid", &[&go], Input::Null);
    let original_pid = current.pid();
    current.wait_for_stdout("READY\n");
    let mrunctl = sb.mrunctl();
    for hop in 1..=HOPS {
        let pid = if hop == 1 {
            original_pid
        } else {
            find_restored(current.pid(), original_pid)
        };
        if hop > 1 {
            assert_ne!(
                pid, original_pid,
                "hop {hop}: the restored process has no outer pid of its own"
            );
        }
        let image = sb.path(&format!("hop{hop}.img"));
        mrunctl.checkpoint_ok(pid, &image);
        current.finish().assert_signal(libc::SIGKILL);
        current = mrunctl.restore(&image, Input::Null, Output::Pipe);
    }
    sb.touch("go");
    let done = current.finish();
    let text = done.stdout_text();
    assert!(
        done.status.success() && text.contains("ALL PASS") && !text.contains("FAIL"),
        "after {HOPS} hops: {}",
        done.describe()
    );
    assert!(
        text.contains(&format!("PID-AFTER {original_pid}\n")),
        "after {HOPS} hops: {}",
        done.describe()
    );
}
