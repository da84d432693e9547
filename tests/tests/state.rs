//! Process state survives checkpoint/restore: each victim sets up one kind of state, is
//! checkpointed after "READY" and restored, and checks its own state (zdtm-style).

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == flag))
        })
        .unwrap_or(false)
}

/// Control: every state victim passes on its own when it is never checkpointed, so a failure
/// after a restore is the restore's doing.
#[test]
fn victims_pass_without_checkpoint() {
    let sb = Sandbox::new("control");
    let go = sb.touch("go");
    let dir = sb.mkdir("dir");
    let cases: &[(&str, bool)] = &[
        ("signals", false),
        ("pending", false),
        ("misc", false),
        ("altstack", false),
        ("avx", false),
        ("clock", false),
        ("brk", false),
        ("brk_static", false),
        ("guard", false),
        ("getpid", false),
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
