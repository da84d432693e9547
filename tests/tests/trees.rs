//! Issue 9: a job is the command and everything it starts. Trees of processes, checkpointed
//! mid-run and restored, give byte-identical results to an uninterrupted run.

mod common;

use common::*;

/// `sh -c 'gzip -9 < big | sha256sum > out'`: the shell, both ends of the pipe and what waits
/// in it are restored together, with their pids.
#[test]
fn pipeline_under_sh() {
    let sb = Sandbox::new("tree-pipeline");
    pipeline_to_file(&sb, "sh: gzip | sha256sum", 1);
}

/// The pipeline checkpointed and restored twice in a row.
#[test]
fn pipeline_under_sh_two_hops() {
    let sb = Sandbox::new("tree-pipeline-2");
    pipeline_to_file(&sb, "sh: gzip | sha256sum (2 hops)", 2);
}

/// A shell loop running a compressor per round in a subshell.
#[test]
fn script_loop_with_subshells() {
    let sb = Sandbox::new("tree-loop");
    loop_to_file(&sb, "sh loop of subshells", 3);
}
