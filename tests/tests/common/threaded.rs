//! The multi-threaded real programs (issue 8): their arguments, shared by the checkpoint and
//! the SSH migration tests, the Go program built from `tests/go/spread.go` and the Python
//! program `tests/python/workers.py`.
//!
//! Inputs are sized so that each runs about 2-5 s uninterrupted on 2 cores.

use super::data::{text_file, MIB};
use super::paths::{scratch_root, test_binary_name};
use super::sandbox::Sandbox;
use super::scenario::{migrate_file_output, Progress};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `xz -T2`: small blocks, so that an 8 MiB input really is compressed by two threads (with
/// the default block size of -6, 24 MiB, it would be a single block).
pub const XZ_T2_ARGS: [&str; 4] = ["-T2", "-6", "--block-size=1MiB", "-c"];
/// `xz -T0`: one thread per CPU.
pub const XZ_T0_ARGS: [&str; 4] = ["-T0", "-6", "--block-size=1MiB", "-c"];
/// `pigz -p 2` (`-n`: no name or time stamp, so copies of the input compress the same).
pub const PIGZ_ARGS: [&str; 5] = ["-p", "2", "-9", "-n", "-c"];
/// `sort --parallel=2 -S 100M` with case-folded multi-key comparisons (the tests set
/// LC_ALL=C and add `-T DIR`).
pub const SORT_THREADED_ARGS: [&str; 7] = [
    "--parallel=2",
    "-S",
    "100M",
    "-f",
    "-k3,3",
    "-k5,5",
    "-k2,2n",
];
/// `workers.py ROUNDS SIZE`.
pub const PYTHON_WORKERS_ARGS: [&str; 2] = ["60", "50000"];
/// `spread ROUNDS CHUNKS ITERATIONS`.
pub const GO_SPREAD_ARGS: [&str; 3] = ["60", "8", "6000000"];

/// Whether /proc/cpuinfo lists `flag` for this CPU.
pub fn cpu_flag(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| {
            c.lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == flag))
        })
        .unwrap_or(false)
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// `tests/python/workers.py`: CPU work in 3 `threading` threads, deterministic output.
pub fn python_workers() -> PathBuf {
    source_dir().join("python/workers.py")
}

/// The Go program `tests/go/spread.go` (goroutines on GOMAXPROCS >= 2 OS threads), built with
/// `go build` once per test binary into the scratch dir (GOCACHE there too). Readable and
/// runnable by every user.
pub fn go_spread() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| go_build("spread")).clone()
}

/// The Go program `tests/go/ticker.go` (time.Sleep, a ticker and channels), built like
/// [`go_spread`].
pub fn go_ticker() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| go_build("ticker")).clone()
}

/// `go build` of `tests/go/NAME.go` into the scratch dir of this test binary.
fn go_build(name: &str) -> PathBuf {
    let dir = scratch_root().join("go").join(test_binary_name());
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let out = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp-{}", std::process::id()));
    let src = source_dir().join(format!("go/{name}.go"));
    let result = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .current_dir(&dir)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .output()
        .unwrap_or_else(|e| panic!("cannot run go (install golang-go: scripts/install-deps): {e}"));
    assert!(
        result.status.success(),
        "go build {} failed ({}):\n{}",
        src.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
    out
}

/// `xz -T2` of an 8 MiB text to a file (opened by the shell), checkpointed and restored `hops`
/// times in a row.
pub fn xz_two_threads_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        &format!(r#"exec xz {} < "$1" > "$2""#, XZ_T2_ARGS.join(" ")),
        // xz writes whole blocks: with fewer of them the last hops come too near the end.
        &text_file(if hops > 1 { 16 * MIB } else { 8 * MIB }),
        hops,
        Progress::OutputGrows,
    );
}
