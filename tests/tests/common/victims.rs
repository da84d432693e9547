//! The victim programs (`tests/victims/*.c`), compiled with `cc` once per test binary.
//!
//! Each victim is built the first time a test asks for it, into
//! `target/<profile>/mrun-tests/victims/<test binary>/`; concurrent test binaries never share
//! an output file, and a build is written under a temporary name and renamed into place.

use super::paths::{scratch_root, test_binary_name};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Spec {
    name: &'static str,
    source: &'static str,
    flags: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        name: "signals",
        source: "signals.c",
        flags: &[],
    },
    Spec {
        name: "sharedmem",
        source: "sharedmem.c",
        flags: &[],
    },
    Spec {
        name: "shmfiles",
        source: "shmfiles.c",
        flags: &[],
    },
    Spec {
        name: "groups",
        source: "groups.c",
        flags: &[],
    },
    Spec {
        name: "dirwalk",
        source: "dirwalk.c",
        flags: &[],
    },
    Spec {
        name: "pipes",
        source: "pipes.c",
        flags: &[],
    },
    Spec {
        name: "unlinked",
        source: "unlinked.c",
        flags: &[],
    },
    Spec {
        name: "cwd_removed",
        source: "cwd_removed.c",
        flags: &[],
    },
    Spec {
        name: "fifo",
        source: "fifo.c",
        flags: &[],
    },
    Spec {
        name: "opath",
        source: "opath.c",
        flags: &[],
    },
    Spec {
        name: "workers",
        source: "workers.c",
        flags: &[],
    },
    Spec {
        name: "socketpair",
        source: "socketpair.c",
        flags: &[],
    },
    Spec {
        name: "listener",
        source: "listener.c",
        flags: &[],
    },
    Spec {
        name: "events",
        source: "events.c",
        flags: &[],
    },
    Spec {
        name: "pending",
        source: "pending.c",
        flags: &[],
    },
    Spec {
        name: "misc",
        source: "misc.c",
        flags: &[],
    },
    Spec {
        name: "altstack",
        source: "altstack.c",
        flags: &[],
    },
    Spec {
        name: "avx",
        source: "avx.c",
        flags: &[],
    },
    Spec {
        name: "clock",
        source: "clock.c",
        flags: &[],
    },
    Spec {
        name: "brk",
        source: "brk.c",
        flags: &[],
    },
    Spec {
        name: "brk_static",
        source: "brk.c",
        flags: &["-static"],
    },
    Spec {
        name: "guard",
        source: "guard.c",
        flags: &[],
    },
    Spec {
        name: "guard_install",
        source: "guard_install.c",
        flags: &[],
    },
    Spec {
        name: "attrs",
        source: "attrs.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "files",
        source: "files.c",
        flags: &[],
    },
    Spec {
        name: "cwd_umask",
        source: "cwd_umask.c",
        flags: &[],
    },
    Spec {
        name: "getpid",
        source: "getpid.c",
        flags: &[],
    },
    Spec {
        name: "abort",
        source: "abort.c",
        flags: &[],
    },
    Spec {
        name: "sleeper",
        source: "sleeper.c",
        flags: &[],
    },
    Spec {
        name: "stdin_reader",
        source: "stdin_reader.c",
        flags: &[],
    },
    Spec {
        name: "checksum",
        source: "checksum.c",
        flags: &[],
    },
    Spec {
        name: "checksum_static",
        source: "checksum.c",
        flags: &["-static"],
    },
    Spec {
        name: "refuse",
        source: "refuse.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "threads",
        source: "threads.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "timers",
        source: "timers.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "churn",
        source: "churn.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "tracer",
        source: "tracer.c",
        flags: &[],
    },
    Spec {
        name: "hopper",
        source: "hopper.c",
        flags: &[],
    },
    Spec {
        name: "dirty",
        source: "dirty.c",
        flags: &["-pthread"],
    },
    Spec {
        name: "affinity",
        source: "affinity.c",
        flags: &["-pthread"],
    },
];

/// Names accepted by [`victim`].
pub const VICTIM_NAMES: [&str; SPECS.len()] = {
    let mut names = [""; SPECS.len()];
    let mut i = 0;
    while i < SPECS.len() {
        names[i] = SPECS[i].name;
        i += 1;
    }
    names
};

static BUILT: [OnceLock<PathBuf>; SPECS.len()] = [const { OnceLock::new() }; SPECS.len()];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("victims")
}

/// Path of the compiled victim `name`, building it on first use.
pub fn victim(name: &str) -> PathBuf {
    let index = SPECS
        .iter()
        .position(|s| s.name == name)
        .unwrap_or_else(|| panic!("no victim named {name:?}; known: {VICTIM_NAMES:?}"));
    BUILT[index].get_or_init(|| build(&SPECS[index])).clone()
}

fn build(spec: &Spec) -> PathBuf {
    let dir = scratch_root().join("victims").join(test_binary_name());
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let out = dir.join(spec.name);
    let tmp = dir.join(format!("{}.tmp-{}", spec.name, std::process::id()));
    let src = source_dir().join(spec.source);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let result = Command::new(&cc)
        .args(["-O2", "-g", "-std=gnu11", "-Wall", "-Wextra"])
        .arg("-I")
        .arg(source_dir())
        .args(spec.flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .arg("-lm")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc} (install build-essential): {e}"));
    assert!(
        result.status.success(),
        "compiling victim {} from {} failed ({}):\n{}",
        spec.name,
        src.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
    out
}
