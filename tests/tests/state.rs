//! Process state survives checkpoint/restore: each victim sets up one kind of state, is
//! checkpointed after "READY" and restored, and checks its own state (zdtm-style).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Control: every state victim passes on its own when it is never checkpointed, so a failure
/// after a restore is the restore's doing.
#[test]
fn victims_pass_without_checkpoint() {
    let sb = Sandbox::new("control");
    let go = sb.touch("go");
    let dir = sb.mkdir("dir");
    let cases: &[(&str, bool)] = &[
        ("signals", false),
        ("workers", false),
        ("sharedmem", false),
        ("pending", false),
        ("misc", false),
        ("altstack", false),
        ("avx", false),
        ("clock", false),
        ("brk", false),
        ("brk_static", false),
        ("guard", false),
        ("getpid", false),
        ("threads", false),
        ("churn", false),
        ("affinity", false),
        ("files", true),
        ("cwd_umask", true),
    ];
    for &(name, wants_dir) in cases {
        let mut args = vec![go.as_os_str()];
        if wants_dir {
            args.push(dir.as_os_str());
        }
        let done = sb.spawn_victim(name, &args, Input::Null).finish();
        let text = done.stdout_text();
        assert!(
            done.status.success() && text.contains("ALL PASS") && !text.contains("FAIL"),
            "victim {name} fails without any checkpoint: {}",
            done.describe()
        );
    }
}

#[test]
fn signal_handlers_and_mask() {
    let sb = Sandbox::new("signals");
    run_state_victim(&sb, "signals", &[], false).assert_all_pass();
}

/// Beyond the contract's list, but process state all the same: a blocked signal raised before
/// the checkpoint, and two queued real-time signals with their values.
#[test]
fn pending_signals_survive() {
    let sb = Sandbox::new("pending");
    run_state_victim(&sb, "pending", &[], false).assert_all_pass();
}

/// Each thread's CPU affinity: a pinned thread stays pinned; the others get every CPU again,
/// not the one CPU the restorer keeps itself and the fresh process on while it drives it.
#[test]
fn cpu_affinity_of_each_thread() {
    let sb = Sandbox::new("affinity");
    run_state_victim(&sb, "affinity", &[], true).assert_all_pass();
}

/// Resource limits, comm, /proc/self/exe, cmdline, environ and auxv.
#[test]
fn rlimits_comm_and_mm_fields() {
    let sb = Sandbox::new("misc");
    run_state_victim(&sb, "misc", &[], false).assert_all_pass();
}

#[test]
fn sigaltstack_and_onstack_handlers() {
    let sb = Sandbox::new("altstack");
    run_state_victim(&sb, "altstack", &[], false).assert_all_pass();
}

#[test]
fn vector_registers_mid_computation() {
    let sb = Sandbox::new("avx");
    let run = run_state_victim(&sb, "avx", &[], false);
    run.assert_all_pass();
    let before = run.original.stdout_text();
    let widest = if cpu_flag("avx512f") {
        "zmm"
    } else if cpu_flag("avx2") {
        "ymm"
    } else {
        "xmm"
    };
    assert!(
        before.contains(&format!("TESTING {widest}")),
        "the victim did not test the CPU's widest registers ({widest}): {before}"
    );
    assert!(run
        .restored
        .stdout_text()
        .contains(&format!("PASS {widest}")));
}

#[test]
fn vdso_clocks_after_restore() {
    let sb = Sandbox::new("clock");
    run_state_victim(&sb, "clock", &[], false).assert_all_pass();
}

#[test]
fn brk_heap_grows_after_restore() {
    let sb = Sandbox::new("brk");
    run_state_victim(&sb, "brk", &[], false).assert_all_pass();
}

#[test]
fn brk_heap_grows_after_restore_static() {
    let sb = Sandbox::new("brk-static");
    run_state_victim(&sb, "brk_static", &[], false).assert_all_pass();
}

#[test]
fn guard_page_and_protections() {
    let sb = Sandbox::new("guard");
    run_state_victim(&sb, "guard", &[], false).assert_all_pass();
}

/// Issue 10 bug: a directory listed part way was read again from its start after restore
/// (`find` printed entries twice): its position is restored like a file's offset.
#[test]
fn directory_listing_goes_on_where_it_stopped() {
    let sb = Sandbox::new("dirwalk");
    let dir = sb.mkdir("big-dir");
    run_state_victim(&sb, "dirwalk", &[dir.as_os_str()], false).assert_all_pass();
}

/// Issue 10 bugs: a pipe holding 300 KB (1 MiB capacity) whose non-blocking write end is
/// restored before its read end, and whose read end is open twice (one blocking, one not):
/// every byte comes back and each descriptor keeps its own flags (one end came back
/// non-blocking when it was not).
#[test]
fn pipe_contents_capacity_and_flags() {
    let sb = Sandbox::new("pipes");
    run_state_victim(&sb, "pipes", &[], false).assert_all_pass();
}

/// Issue 10: files with no name left, held open (a deleted file opened twice, a tmpfile, two
/// memfds, one sealed): contents, sizes, modes, offsets and seals come back, and the deleted
/// file's two open files are still one file.
#[test]
fn deleted_files_and_memfds_held_open() {
    let sb = Sandbox::new("unlinked");
    let dir = sb.mkdir("files");
    run_state_victim(&sb, "unlinked", &[dir.as_os_str()], false).assert_all_pass();
}

/// Issue 10, item 4: THP-disable, child-subreaper, dumpable (off), no_new_privs, the
/// parent-death signal, oom_score_adj, timer slack (per thread), a membarrier registration,
/// personality and the madvise flags of areas (VmFlags dc wf hg nh dd) come back.
#[test]
fn process_attributes_and_madvise_flags() {
    let sb = Sandbox::new("attrs");
    assert_passes_unrestored(&sb, "attrs", "root");
    run_state_victim(&sb, "attrs", &["root".as_ref()], false).assert_all_pass();
}

/// Issue 10, item 5: a process with guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13+)
/// failed to checkpoint ("reading memory ... Input/output error"); its guards now come back.
#[test]
fn guard_regions_of_madvise_guard_install() {
    let sb = Sandbox::new("guard-install");
    if !guard_regions_supported(&sb) {
        eprintln!("skipped: this kernel has no MADV_GUARD_INSTALL");
        return;
    }
    run_state_victim(&sb, "guard_install", &[], false).assert_all_pass();
}

/// Issue 10: a process whose working directory was removed is restored in a removed
/// directory (the restore failed to enter it).
#[test]
fn removed_working_directory() {
    let sb = Sandbox::new("cwd-removed");
    let dir = sb.mkdir("dirs");
    run_state_victim(&sb, "cwd_removed", &[dir.as_os_str()], false).assert_all_pass();
}

/// Issue 10: a named pipe whose ends a parent and its child hold, 100 KB waiting in it: the
/// bytes, the capacity and each end's flags come back, and the child's write after the restore
/// follows them.
#[test]
fn named_pipe_between_parent_and_child() {
    let sb = Sandbox::new("fifo");
    let dir = sb.mkdir("fifos");
    run_state_victim(&sb, "fifo", &[dir.as_os_str()], false).assert_all_pass();
}

/// Issue 10: O_PATH descriptors on a file, a symlink itself, a directory and a named pipe still
/// name them after the restore (the symlink and the pipe were refused as special files).
#[test]
fn o_path_descriptors() {
    let sb = Sandbox::new("opath");
    let dir = sb.mkdir("named");
    run_state_victim(&sb, "opath", &[dir.as_os_str()], false).assert_all_pass();
}

#[test]
fn append_and_offset_files() {
    let sb = Sandbox::new("files");
    let dir = sb.mkdir("files");
    run_state_victim(&sb, "files", &[dir.as_os_str()], false).assert_all_pass();
    let log = std::fs::read_to_string(dir.join("append.log")).expect("append.log");
    assert_eq!(
        log, "first\nsecond\nthird\n",
        "append.log as seen by the test"
    );
}

#[test]
fn cwd_and_umask() {
    let sb = Sandbox::new("cwd");
    let dir = sb.mkdir("cwd");
    run_state_victim(&sb, "cwd_umask", &[dir.as_os_str()], false).assert_all_pass();
    let mode = std::fs::metadata(dir.join("work/after.txt"))
        .expect("after.txt")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o640,
        "mode of the file created after the restore"
    );
}

#[test]
fn same_pid_after_restore() {
    let sb = Sandbox::new("getpid");
    let run = run_state_victim(&sb, "getpid", &[], false);
    run.assert_all_pass();
    assert!(
        run.original
            .stdout_text()
            .contains(&format!("PID {}\n", run.pid)),
        "the original printed another pid than {}: {}",
        run.pid,
        run.original.describe()
    );
    assert!(
        run.restored
            .stdout_text()
            .contains(&format!("PID-AFTER {}\n", run.pid)),
        "the restored process does not see pid {}: {}",
        run.pid,
        run.restored.describe()
    );
}

#[test]
fn abort_after_restore_kills_restore_with_sigabrt() {
    let sb = Sandbox::new("abort");
    let run = run_state_victim(&sb, "abort", &[], false);
    assert!(
        run.restored.stdout_text().contains("ABORTING"),
        "{}",
        run.restored.describe()
    );
    run.restored.assert_signal(libc::SIGABRT);
}

#[test]
fn blocked_in_nanosleep() {
    let sb = Sandbox::new("sleeper");
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
fn coreutils_sleep_blocked_in_nanosleep() {
    let sb = Sandbox::new("sleep");
    let v = sb.spawn("sleep 3", "sleep", &["3"], Input::Null, Output::Pipe);
    wait_until_sleeping(v.pid());
    std::thread::sleep(Duration::from_millis(200));
    let image = sb.path("sleep.img");
    sb.mrunctl().checkpoint_ok(v.pid(), &image);
    v.finish().assert_signal(libc::SIGKILL);
    let restored = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    restored.assert_success();
}

#[test]
fn blocked_in_read_on_stdin_pipe() {
    let sb = Sandbox::new("stdin");
    let mut v = sb.spawn_victim("stdin_reader", &["data"], Input::Pipe);
    v.wait_for_stdout("READY\n");
    wait_until_sleeping(v.pid());
    let image = sb.path("reader.img");
    sb.mrunctl().checkpoint_ok(v.pid(), &image);
    v.close_stdin();
    let original = v.finish();
    original.assert_signal(libc::SIGKILL);
    assert!(
        !original.stdout_text().contains("PASS"),
        "{}",
        original.describe()
    );

    let mut restore = sb.mrunctl().restore(&image, Input::Pipe, Output::Pipe);
    restore.write_stdin(b"hello from the test\n");
    restore.close_stdin();
    let restored = restore.finish();
    restored.assert_success();
    let text = restored.stdout_text();
    assert!(
        text.contains("ALL PASS") && !text.contains("FAIL"),
        "{}",
        restored.describe()
    );
}

/// Issue 8, per-thread state of a multi-threaded process (tests/victims/threads.c): distinct
/// signal masks and sigaltstacks, a signal queued to one thread with its siginfo, threads
/// blocked in FUTEX_WAIT, pthread_join and pthread_cond_timedwait, a robust mutex whose owner
/// exits after the restore, tids, names, pthread_kill/pthread_getschedparam, and distinct
/// vector registers live in two threads.
#[test]
fn per_thread_state_survives() {
    let sb = Sandbox::new("threads");
    let run = run_state_victim(&sb, "threads", &[], false);
    run.assert_all_pass();
    let widest = if cpu_flag("avx2") { "ymm" } else { "xmm" };
    assert!(
        run.original
            .stdout_text()
            .contains(&format!("TESTING {widest}")),
        "the victim did not test the CPU's {widest} registers: {}",
        run.original.describe()
    );
    let text = run.restored.stdout_text();
    for what in [
        "queued signal with its siginfo in sig-0",
        "futex waiter released by FUTEX_WAKE",
        "pthread_join across the checkpoint",
        "pthread_cond_timedwait woken by the signal",
        "robust mutex waiter gets EOWNERDEAD",
        "avx-0 vector registers",
        "avx-1 vector registers",
        "sig-1 SA_ONSTACK handler on its own altstack",
    ] {
        assert!(
            text.contains(&format!("PASS {what}\n")),
            "no PASS {what}: {}",
            run.restored.describe()
        );
    }
    // Every thread kept its tid: the lines name them, and the pid is the original one.
    assert!(
        text.matches(" gettid unchanged\n").count() == 10,
        "not every thread checked its tid: {}",
        run.restored.describe()
    );
}

/// Threads being created and exiting (joined and detached) while the checkpoint runs, three
/// checkpoints in a row mid-churn; the victim keeps churning afterwards and all results hold.
#[test]
fn threads_created_and_exiting_during_checkpoint() {
    let sb = Sandbox::new("churn");
    let (_, done) = run_state_victim_hops(&sb, "churn", &[], 3);
    assert_victim_passed(&done, "the churning victim after 3 checkpoints");
}
