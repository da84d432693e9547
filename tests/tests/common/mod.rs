//! The end-to-end test harness: builds the victim programs, runs processes with captured output
//! and hard timeouts, drives `mrunctl checkpoint` / `mrunctl restore`, and inspects `/proc`.
//!
//! Every wait in here is bounded (see [`TIMEOUT`]): a test that would hang is killed and fails
//! with the output gathered so far. Processes a test starts are killed (with everything below
//! them) when their [`Proc`] is dropped, so a failing test leaves nothing running.
//!
//! It never touches the engine's code: it only runs the `mrunctl` binary, found next to the test
//! binary (`target/release/mrunctl`) or at `$MRUNCTL`, and `mrun` (with `mrun-agent` beside it)
//! likewise (`$MRUN`).
#![allow(dead_code, unused_imports)]

mod cgroup;
mod data;
mod mrun;
mod node_files;
mod paths;
mod process;
mod procfs;
mod reference;
mod sandbox;
mod scenario;
mod sshd;
mod threaded;
mod trees;
mod victims;

pub use cgroup::CpuSlice;
pub use data::{text_file, MIB};
pub use mrun::{write_atomically, Job, Mrun, Place, RuntimeDir};
pub use node_files::{different_content, NodeFiles, NODE_FILES_ENV};
pub use paths::{agent_path, mrun_path, mrunctl_path};
pub use process::{assert_same_bytes, pipe, send_signal, Finished, Input, Output, Proc, TIMEOUT};
pub use procfs::{
    children, descendants, fd_offset, find_restored, ns_pids, process_state, status_field,
    thread_count, tracer_pid, wait_until, wait_until_sleeping,
};
pub use reference::{
    file_len, gzip_input, gzip_reference, gzip_reference_of, python3, read, reference, Sink,
    GZIP_ARGS,
};
pub use sandbox::{Mrunctl, Sandbox, User, NOBODY};
pub use scenario::{
    assert_passes_unrestored, assert_victim_passed, guard_regions_supported, member_named,
    migrate_file_output, migrate_pipe_output, precopied_checkpoint_restores_in_place,
    run_state_victim, run_state_victim_hops, run_state_victim_then, wait_threads_running, Progress,
    StateRun, MEMORY_WRITER_PY,
};
pub use sshd::{
    assert_at, daemons_for, keygen, locate, login_name, At, ClientHome, HostCertificate, Node,
    NodeHome, NodeOptions, RemoteAgent, SshMrun, Via,
};
pub use threaded::{
    cpu_flag, go_spread, go_ticker, python_workers, xz_two_threads_to_file, GO_SPREAD_ARGS,
    PIGZ_ARGS, PYTHON_WORKERS_ARGS, SORT_THREADED_ARGS, XZ_T0_ARGS, XZ_T2_ARGS,
};
pub use trees::{loop_to_file, pipeline_to_file, pool_script, pool_to_file, tempfile_script};
pub use victims::{victim, VICTIM_NAMES};
