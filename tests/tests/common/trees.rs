//! Jobs that are trees of processes (issue 9): the scripts the tree tests run, shared by the
//! checkpoint, chain and unprivileged tests.

use super::data::{text_file, MIB};
use super::sandbox::Sandbox;
use super::scenario::{migrate_file_output, Progress};

/// `sh` running a pipeline: it waits for gzip and sha256sum, joined by a pipe whose buffered
/// bytes travel with the job; the result is written at the very end.
pub const PIPELINE: &str = r#"gzip -9 < "$1" | sha256sum > "$2""#;

/// A shell loop calling a compressor per round in a subshell, as a build or batch script
/// does: the tree changes shape all the time.
pub const LOOP: &str =
    r#"exec > "$2"; for i in 1 2 3 4 5 6 7 8; do (gzip -6 < "$1" | wc -c; echo "round $i"); done"#;

/// The pipeline checkpointed mid-run (once gzip has read part of its input) `hops` times.
pub fn pipeline_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        PIPELINE,
        &text_file(16 * MIB),
        hops,
        Progress::MemberInputRead("gzip"),
    );
}

/// The loop checkpointed after some of its rounds, `hops` times.
pub fn loop_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        LOOP,
        &text_file(4 * MIB),
        hops,
        Progress::OutputGrows,
    );
}
