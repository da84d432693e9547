//! The command line of `mrunctl`: usage errors and their exit codes, one line per error.
//! (Building this test also builds the `mrunctl` binary the end-to-end suite in `tests/` runs.)

use std::process::{Command, Output};

fn mrunctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mrunctl"))
        .args(args)
        .output()
        .expect("run mrunctl")
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let o = mrunctl(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for cmd in ["checkpoint", "restore"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}: {text}");
    }
}

#[test]
fn checkpoint_needs_an_output() {
    let o = mrunctl(&["checkpoint", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("--output"));
}

#[test]
fn checkpoint_of_a_missing_pid_is_one_line_and_exit_3() {
    // pid_max is below 2^22 on Linux, so this pid cannot exist.
    let dir = std::env::temp_dir().join(format!("mrunctl-usage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let image = dir.join("never.img");
    let o = mrunctl(&[
        "checkpoint",
        "4194305",
        "-o",
        image.to_str().expect("utf-8 temp path"),
    ]);
    assert!(
        !image.exists(),
        "a failed checkpoint left a partial image behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(3));
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no process with pid 4194305"), "{err}");
}

#[test]
fn restore_of_a_missing_file_is_one_line() {
    let o = mrunctl(&["restore", "/nonexistent/image"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/image"), "{err}");
}

#[test]
fn restore_of_something_that_is_not_an_image_exits_4() {
    let o = mrunctl(&["restore", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr_of(&o).contains("not an mrun image"),
        "{}",
        stderr_of(&o)
    );
}
