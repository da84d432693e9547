//! Where things are: the `mrunctl` binary under test and the scratch area in the target dir.

use std::path::PathBuf;

/// `target/release` (or whichever profile dir holds this test binary, which lives in its
/// `deps/` subdirectory).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("cannot find the target dir from {}", exe.display()))
}

/// `target/release/mrun-tests`: compiled victims and cached input data.
pub fn scratch_root() -> PathBuf {
    profile_dir().join("mrun-tests")
}

/// The name of this test binary without cargo's hash (`state-0123abcd` -> `state`).
pub fn test_binary_name() -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

/// The `mrunctl` binary under test: `$MRUNCTL`, else `mrunctl` next to the `deps/` dir holding
/// this test binary (`cargo build --release -p mrun` puts it there).
pub fn mrunctl_path() -> PathBuf {
    let path = match std::env::var_os("MRUNCTL") {
        Some(p) => PathBuf::from(p),
        None => profile_dir().join("mrunctl"),
    };
    assert!(
        path.is_file(),
        "mrunctl not found at {}: build it first with `cargo build --release -p mrun`, \
         or point $MRUNCTL at it",
        path.display()
    );
    path
}

/// The `mrun` binary under test: `$MRUN`, else `mrun` next to the `deps/` dir holding this test
/// binary (`cargo build --release -p mrun -p mrun-agent` puts it there). `mrun-agent` must be
/// beside it (see [`agent_path`]).
pub fn mrun_path() -> PathBuf {
    let path = match std::env::var_os("MRUN") {
        Some(p) => PathBuf::from(p),
        None => profile_dir().join("mrun"),
    };
    assert!(
        path.is_file(),
        "mrun not found at {}: build it first with `cargo build --release -p mrun -p mrun-agent`, \
         or point $MRUN at it",
        path.display()
    );
    path
}

/// The `mrun-agent` that `mrun` starts for the node `local`: the one beside [`mrun_path`].
pub fn agent_path() -> PathBuf {
    let mrun = mrun_path();
    let path = mrun
        .parent()
        .map(|d| d.join("mrun-agent"))
        .unwrap_or_else(|| PathBuf::from("mrun-agent"));
    assert!(
        path.is_file(),
        "mrun-agent not found at {} (beside mrun): build it with \
         `cargo build --release -p mrun -p mrun-agent`",
        path.display()
    );
    path
}
