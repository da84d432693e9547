//! Event objects travel with their state (issue 10): eventfd counters and semaphore mode,
//! timerfds that fire on time with their unread expirations, signalfds, epoll instances that
//! report readiness for the right data (nested ones too), inotify watches under their watch
//! descriptors. Each victim mode sets its objects up, is checkpointed and restored, and checks
//! itself (`tests/victims/events.c`).

mod common;

use common::*;
use std::ffi::OsStr;

fn events(mode: &str) {
    let sb = Sandbox::new(&format!("events-{mode}"));
    run_state_victim(&sb, "events", &[OsStr::new(mode)], false).assert_all_pass();
}

/// A plain eventfd holding 5, a semaphore one holding 3, a blocking empty one.
#[test]
fn eventfd_counters_and_semaphore_mode() {
    events("eventfd");
}

/// Armed monotonic and absolute realtime timers fire no earlier than their deadline and
/// within 50 ms of it plus the time the process was frozen; unread expirations, interval,
/// clock and a disarmed timer are kept.
#[test]
fn timerfds_fire_on_time() {
    events("timerfd");
}

/// A signal queued before the checkpoint and one sent after the restore are read from the
/// signalfd.
#[test]
fn signalfd_reads_signals() {
    events("signalfd");
}

/// Pipes, eventfds, a timerfd and sockets registered with one epoll instance (one under a
/// number since closed, a oneshot already taken, an edge-triggered one) are reported by
/// their data as before the checkpoint.
#[test]
fn epoll_reports_the_right_data() {
    events("epoll");
}

/// An epoll instance watching two others.
#[test]
fn nested_epoll() {
    events("nested");
}

/// Inotify watches come back on their directories under the same watch descriptors.
#[test]
fn inotify_watches_keep_their_descriptors() {
    events("inotify");
}

/// A Python asyncio program (an epoll loop with its self-pipe socketpair, producers and a
/// consumer on an asyncio.Queue paced by sleeps, a call_later and wait_for timeouts),
/// checkpointed and restored twice mid-run, prints the same bytes as an uninterrupted run.
#[test]
fn python_asyncio_queue_two_hops() {
    let sb = Sandbox::new("events-asyncio");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncio_queue.py");
    migrate_pipe_output(
        &sb,
        "python3 asyncio queue",
        python3(),
        &["-u".as_ref(), script.as_os_str()],
        &[],
        2,
    );
}
