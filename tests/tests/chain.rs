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
    let (original_pid, done) = run_state_victim_hops(&sb, "getpid", &[], HOPS);
    assert_victim_passed(&done, &format!("after {HOPS} hops, the victim"));
    assert!(
        done.stdout_text()
            .contains(&format!("PID-AFTER {original_pid}\n")),
        "after {HOPS} hops: {}",
        done.describe()
    );
}

/// A threaded process (issue 8): the per-thread state victim checkpointed and restored five
/// times in a row, each time from the previous restore, then all its checks pass.
#[test]
fn threaded_victim_five_hops() {
    let sb = Sandbox::new("chain-threads");
    let (_, done) = run_state_victim_hops(&sb, "threads", &[], HOPS);
    assert_victim_passed(&done, &format!("after {HOPS} hops, the victim"));
}

/// Threads created and exiting without pause, checkpointed and restored five times mid-churn.
#[test]
fn thread_churn_five_hops() {
    let sb = Sandbox::new("chain-churn");
    let (_, done) = run_state_victim_hops(&sb, "churn", &[], HOPS);
    assert_victim_passed(&done, &format!("after {HOPS} hops, the victim"));
}

/// xz -T2 (two compressing threads) to a file, five hops.
#[test]
fn xz_two_threads_five_hops() {
    let sb = Sandbox::new("chain-xz-t2");
    xz_two_threads_to_file(&sb, "xz -T2 (5 hops)", HOPS);
}
