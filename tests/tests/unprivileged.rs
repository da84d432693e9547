//! The same checkpoint/restore cases with the victim, `mrunctl checkpoint` and `mrunctl
//! restore` all running as user nobody (uid 65534) on nobody's own processes.

mod common;

use common::*;

fn nobody(name: &str) -> Sandbox {
    Sandbox::for_user(name, User::Nobody)
}

/// Control: the sandbox really runs things as nobody.
#[test]
fn sandbox_runs_as_nobody() {
    let sb = nobody("nobody-control");
    let id = sb.run("id", "id", &["-u"], Input::Null);
    id.assert_success();
    assert_eq!(id.stdout_text().trim(), "65534");
}

/// `mrunctl checkpoint --pre-copy` and the restore that forks the process with its pages in
/// place, as nobody: the process must not keep the capabilities the restore's user namespace
/// gives (an exec would have dropped them).
#[test]
fn precopied_checkpoint_as_nobody() {
    let sb = nobody("nobody-precopy");
    precopied_checkpoint_restores_in_place(&sb, "pre-copied checkpoint as nobody");
}

#[test]
fn gzip_to_file_as_nobody() {
    let sb = nobody("nobody-gzip-file");
    let input = text_file(24 * MIB);
    migrate_file_output(
        &sb,
        "gzip -9 as nobody",
        r#"exec gzip -9 < "$1" > "$2""#,
        &input,
        1,
        Progress::OutputGrows,
    );
}

#[test]
fn gzip_to_pipe_as_nobody() {
    let sb = nobody("nobody-gzip-pipe");
    let input = sb.input(&text_file(16 * MIB));
    migrate_pipe_output(
        &sb,
        "gzip -9 -c as nobody",
        "gzip",
        &["-9".as_ref(), "-c".as_ref(), input.as_os_str()],
        &[],
        1,
    );
}

#[test]
fn static_checksum_as_nobody() {
    let sb = nobody("nobody-static");
    migrate_pipe_output(
        &sb,
        "checksum_static as nobody",
        sb.victim("checksum_static"),
        &["60"],
        &[],
        1,
    );
}

#[test]
fn same_pid_as_nobody() {
    let sb = nobody("nobody-getpid");
    let run = run_state_victim(&sb, "getpid", &[], false);
    run.assert_all_pass();
    let want = format!("PID-AFTER {}\n", run.pid);
    assert!(
        run.restored.stdout_text().contains(&want),
        "{}",
        run.restored.describe()
    );
}

#[test]
fn nanosleep_as_nobody() {
    let sb = nobody("nobody-sleeper");
    let mut v = sb.spawn_victim("sleeper", &["3"], Input::Null);
    v.wait_for_stdout("READY\n");
    wait_until_sleeping(v.pid());
    let image = sb.path("sleeper.img");
    sb.mrunctl().checkpoint_ok(v.pid(), &image);
    v.finish().assert_signal(libc::SIGKILL);
    let restored = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    restored.assert_success();
    assert!(
        restored.stdout_text().contains("ALL PASS"),
        "{}",
        restored.describe()
    );
}

#[test]
fn abort_as_nobody() {
    let sb = nobody("nobody-abort");
    let run = run_state_victim(&sb, "abort", &[], false);
    assert!(
        run.restored.stdout_text().contains("ABORTING"),
        "{}",
        run.restored.describe()
    );
    run.restored.assert_signal(libc::SIGABRT);
}

#[test]
fn files_as_nobody() {
    let sb = nobody("nobody-files");
    let dir = sb.mkdir("files");
    run_state_victim(&sb, "files", &[dir.as_os_str()], false).assert_all_pass();
}

#[test]
fn signals_as_nobody() {
    let sb = nobody("nobody-signals");
    run_state_victim(&sb, "signals", &[], false).assert_all_pass();
}

/// Issue 8: the per-thread state victim, all as nobody.
#[test]
fn per_thread_state_as_nobody() {
    let sb = nobody("nobody-threads");
    run_state_victim(&sb, "threads", &[], false).assert_all_pass();
}

/// Issue 8: threads created and exiting during two checkpoints, all as nobody.
#[test]
fn thread_churn_as_nobody() {
    let sb = nobody("nobody-churn");
    let (_, done) = run_state_victim_hops(&sb, "churn", &[], 2);
    assert_victim_passed(&done, "the churning victim as nobody");
}

/// Issue 8: a real threaded program (xz -T2) as nobody.
#[test]
fn xz_two_threads_as_nobody() {
    let sb = nobody("nobody-xz-t2");
    xz_two_threads_to_file(&sb, "xz -T2 as nobody", 1);
}

/// Issue 9: a pipeline under sh (a tree of three processes) as nobody.
#[test]
fn pipeline_under_sh_as_nobody() {
    let sb = nobody("nobody-pipeline");
    pipeline_to_file(&sb, "sh: gzip | sha256sum as nobody", 1);
}

/// Issue 9: a parent with its workers, pipes and an unreaped child, as nobody.
#[test]
fn parent_and_workers_as_nobody() {
    let sb = nobody("nobody-workers");
    run_state_victim(&sb, "workers", &[], false).assert_all_pass();
}

/// Issue 9: `multiprocessing.Pool(2)` (threads, workers, pipes, semaphores in /dev/shm) as
/// nobody.
#[test]
fn python_pool_as_nobody() {
    let sb = nobody("nobody-pool");
    pool_to_file(&sb, "python3 multiprocessing.Pool(2) as nobody", 1);
}

/// Issue 9: POSIX shared memory made again at its path by an unprivileged restore.
#[test]
fn shared_memory_file_made_again_as_nobody() {
    let sb = nobody("nobody-shmfiles");
    run_state_victim_then(&sb, "shmfiles", &[], false, |pid| {
        let path = format!("/dev/shm/mrun-victim-{pid}");
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {path}: {e}"));
    })
    .assert_all_pass();
}

/// The process attributes as nobody: dumpable stays on (nobody cannot checkpoint a process
/// that is not), oom_score_adj raised.
#[test]
fn process_attributes_as_nobody() {
    let sb = nobody("nobody-attrs");
    assert_passes_unrestored(&sb, "attrs", "user");
    run_state_victim(&sb, "attrs", &["user".as_ref()], false).assert_all_pass();
}

#[test]
fn guard_regions_as_nobody() {
    let sb = nobody("nobody-guard-install");
    if !guard_regions_supported(&sb) {
        eprintln!("skipped: this kernel has no MADV_GUARD_INSTALL");
        return;
    }
    run_state_victim(&sb, "guard_install", &[], false).assert_all_pass();
}

/// Timers restored by an unprivileged restorer: PR_TIMER_CREATE_RESTORE_IDS needs no privilege.
#[test]
fn timers_as_nobody() {
    let sb = nobody("nobody-timers");
    run_state_victim(&sb, "timers", &[], false).assert_all_pass();
}

/// Issue 10: the event objects (epoll with its targets, eventfd, timerfd, signalfd, inotify)
/// checkpointed and restored by nobody.
#[test]
fn event_objects_as_nobody() {
    for mode in [
        "eventfd", "timerfd", "signalfd", "epoll", "nested", "inotify",
    ] {
        let sb = nobody(&format!("nobody-events-{mode}"));
        run_state_victim(&sb, "events", &[mode.as_ref()], false).assert_all_pass();
    }
}

/// Issue 10: deleted files and memfds held open, named pipes, O_PATH descriptors and a removed
/// working directory, restored by nobody (the files are made again where nobody may write).
#[test]
fn files_with_no_name_fifos_and_o_path_as_nobody() {
    for name in ["unlinked", "fifo", "opath", "cwd_removed"] {
        let sb = nobody(&format!("nobody-{name}"));
        let dir = sb.mkdir("files");
        run_state_victim(&sb, name, &[dir.as_os_str()], false).assert_all_pass();
    }
}

/// Issue 9: unix socket pairs between a parent and its child, and one whose peer has exited,
/// as nobody.
#[test]
fn socket_pairs_as_nobody() {
    for mode in ["tree", "closed"] {
        let sb = nobody(&format!("nobody-sockets-{mode}"));
        run_state_victim(&sb, "socketpair", &[mode.as_ref()], false).assert_all_pass();
    }
}

/// Issue 10: listeners of the job (a socket file, an abstract name, a relative name) and the
/// connections they accepted, as nobody: the socket files are made again in a directory nobody
/// owns.
#[test]
fn listeners_as_nobody() {
    let sb = nobody("nobody-listener");
    let dir = sb.mkdir("sockets");
    run_state_victim(&sb, "listener", &[dir.as_os_str()], false).assert_all_pass();
}

/// Issue 10: a directory read part way and a pipe open twice with its own flags, as nobody.
#[test]
fn directory_position_and_pipes_as_nobody() {
    let sb = nobody("nobody-dirwalk");
    let dir = sb.mkdir("big-dir");
    run_state_victim(&sb, "dirwalk", &[dir.as_os_str()], false).assert_all_pass();
    let sb = nobody("nobody-pipes");
    run_state_victim(&sb, "pipes", &[], false).assert_all_pass();
}
