//! The `mrun-agent` that mrun uploads to a node without one (into the node's `~/.cache/mrun`,
//! see `migrate_ssh.rs` for the install itself): small, and the copies older versions of mrun
//! uploaded there are removed, except one a process still runs; nothing else there is touched.
//!
//! Runs as root (sshd must run as root to log a user in). Build first:
//! `cargo build --release -p mrun -p mrun-agent`.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// What an uploaded agent may weigh at most: the release profile strips the agent's debug
/// info (it was 36 MB with it); the installed one (`--profile dist`) is smaller still.
const AGENT_MAX_BYTES: u64 = 8 << 20;

#[test]
fn old_uploaded_agents_removed_current_one_small() {
    let sb = Sandbox::new("agent-upload");
    let a = Node::start(&sb, "a");
    let client = ClientHome::for_nodes(&sb, &[("a", &a)]);
    let cache = a.home().join(".cache/mrun");
    std::fs::create_dir_all(&cache).expect("mkdir the node's cache");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // What an older mrun left: an agent of another version and one of another build.
    let old = [
        "mrun-agent-0.0.1-0123456789ab",
        "mrun-agent-0.1.0-aaaaaaaaaaaa",
    ];
    for name in old {
        std::fs::write(cache.join(name), b"#!/bin/sh\nexit 1\n").expect("write an old agent");
    }
    // An old agent that still runs (an old daemon's session): kept.
    let running = cache.join("mrun-agent-0.0.2-bbbbbbbbbbbb");
    std::fs::copy("/bin/sleep", &running).expect("copy sleep");
    let mut busy = Proc::spawn(
        "old agent still running",
        {
            let mut c = Command::new(&running);
            c.arg("600");
            c
        },
        Input::Null,
        Output::Null,
    );
    // Not mrun's: kept.
    let others = ["notes.txt", "mrun-agent.toml", "mrun-agent-custom"];
    for name in others {
        std::fs::write(cache.join(name), name).expect("write another file");
    }

    let m = SshMrun::new(&sb, &client, RemoteAgent::Unset);
    let sleep = sb.program(Path::new("/bin/sleep"));
    let job = m.start("sleep 600", &sleep, &["600"], Input::Null, Output::Pipe);
    m.mrun.migrate_ok(&job, "a");
    assert_at(&job, &[&a], At::Node("a".into()));

    let mut names: Vec<String> = std::fs::read_dir(&cache)
        .expect("list the node's cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in old {
        assert!(
            !names.iter().any(|n| n == name),
            "the old agent {name} is still there: {names:?}"
        );
    }
    for name in others
        .iter()
        .copied()
        .chain(["mrun-agent-0.0.2-bbbbbbbbbbbb"])
    {
        assert!(
            names.iter().any(|n| n == name),
            "{name} was removed: {names:?}"
        );
    }
    let current: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("mrun-agent-{}-", env!("CARGO_PKG_VERSION"))))
        .collect();
    assert_eq!(current.len(), 1, "expected one current agent: {names:?}");
    let size = std::fs::metadata(cache.join(current[0]))
        .expect("stat the uploaded agent")
        .len();
    eprintln!("uploaded agent {}: {size} bytes", current[0]);
    assert!(
        size <= AGENT_MAX_BYTES,
        "the uploaded agent weighs {size} bytes, more than {AGENT_MAX_BYTES}"
    );

    m.mrun.migrate_ok(&job, "home");
    busy.kill();
}
