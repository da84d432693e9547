//! The home daemon listens only where its user can reach it, and answers nobody else.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// What user `nobody` gets from the daemon socket at `path`: the Python client's one line.
fn nobody_talks_to(path: &std::path::Path) -> String {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\nexcept OSError as e:\n    print('connect failed', e.errno); raise SystemExit\ntry:\n    s.sendall(b'connect local\\n')\n    s.settimeout(5)\n    data = s.recv(100)\nexcept OSError:\n    data = b'refused'\nprint('answer', repr(data))\n",
        path.display().to_string()
    );
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            python,
            "-c",
            &script,
        ])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run python3 as nobody");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn another_user_cannot_use_the_daemon() {
    if !is_root() {
        eprintln!("skipped: needs root to act as a second user");
        return;
    }
    let sb = Sandbox::new("daemon-privacy");
    let runtime = sb.path("runtime");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let home = sb.path("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut daemon = Command::new(mrun_path())
        .arg("--daemon")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("MRUN_DAEMON_IDLE_SECS", "20")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let dir = runtime.join("mrun");
    let mut socket = None;
    wait_until(TIMEOUT, || {
        socket = std::fs::read_dir(&dir).ok().and_then(|mut d| {
            d.find_map(|e| {
                e.ok()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().contains("daemon-"))
            })
        });
        socket.is_some()
    });
    let socket = socket.expect("the daemon's socket");
    let mode = std::fs::metadata(&dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the socket directory must be private");

    // The directory keeps nobody out...
    let answer = nobody_talks_to(&socket);
    assert!(
        answer.contains("connect failed 13"),
        "nobody reached the daemon: {answer}"
    );
    // ...and with the directory opened up on purpose, the daemon itself still refuses.
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let answer = nobody_talks_to(&socket);
    // The daemon hangs up on another user without a word (EOF, or a reset).
    assert!(
        answer.contains("answer b''") || answer.contains("answer b'refused'"),
        "the daemon answered another user: {answer}"
    );

    let _ = daemon.kill();
    let _ = daemon.wait();
    std::thread::sleep(Duration::from_millis(50));
}
