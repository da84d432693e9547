//! Helpers shared by the migration tests: the reference run and small file utilities.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{Input, Output, Proc};

/// The python3 to run: /usr/bin/python3, else the real interpreter behind `python3` on PATH
/// (a pyenv shim is a bash script that would fork).
pub fn python3() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.exists() {
        return system;
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is not installed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn file_len(p: &Path) -> usize {
    std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0)
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Runs `program args...` to the end outside mrun (the uninterrupted reference) and returns its
/// stdout, asserting it succeeded.
pub fn reference<S: AsRef<OsStr>>(
    label: &str,
    program: impl AsRef<OsStr>,
    args: &[S],
    envs: &[(&str, &str)],
    stdin: Input,
) -> Vec<u8> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let done = Proc::spawn(format!("{label} (uninterrupted)"), cmd, stdin, Output::Pipe).finish();
    done.assert_success();
    done.stdout
}

/// The arguments of the gzip tests: `-n` (no name or time stamp in the header) so that copies
/// of the input compress the same.
pub const GZIP_ARGS: [&str; 3] = ["-9", "-n", "-c"];

/// The input of the gzip tests (readable by every user).
pub fn gzip_input() -> PathBuf {
    super::data::text_file(24 * super::data::MIB)
}

/// The uninterrupted `gzip -9 -n -c` of [`gzip_input`].
pub fn gzip_reference() -> &'static [u8] {
    gzip_reference_of(&gzip_input())
}

/// The uninterrupted `gzip -9 -n -c` of `input`, computed once per test process.
pub fn gzip_reference_of(input: &Path) -> &'static [u8] {
    static REFERENCES: std::sync::Mutex<Vec<(PathBuf, &'static [u8])>> =
        std::sync::Mutex::new(Vec::new());
    let mut known = REFERENCES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, out)) = known.iter().find(|(p, _)| p == input) {
        return out;
    }
    let mut args: Vec<&OsStr> = GZIP_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    let out: &'static [u8] = reference("gzip -9 -n -c", "gzip", &args, &[], Input::Null).leak();
    known.push((input.to_path_buf(), out));
    out
}

/// Where the job's stdout goes in an output-comparing test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// A regular file (the job writes it itself, at home or away).
    File,
    /// A pipe read by the test (away, the output is relayed through mrun).
    Pipe,
}
