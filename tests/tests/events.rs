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

/// A Python asyncio program serving itself over a unix socket (a listener on a socket file, a
/// connection kept all along, one made per round), checkpointed and restored twice mid-run,
/// prints the same bytes as an uninterrupted run.
#[test]
fn python_asyncio_unix_server_two_hops() {
    let sb = Sandbox::new("events-asyncio-unix");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/asyncio_unix.py");
    migrate_pipe_output(
        &sb,
        "python3 asyncio unix server",
        python3(),
        &["-u".as_ref(), script.as_os_str()],
        &[],
        2,
    );
}

/// A Go program living on the runtime's timers (time.Sleep, a ticker, channels; its epoll
/// instance and wake-up pipe) checkpointed and restored twice mid-run prints the same bytes as
/// an uninterrupted run.
#[test]
fn go_ticker_two_hops() {
    let sb = Sandbox::new("events-go-ticker");
    let no_args: [&std::ffi::OsStr; 0] = [];
    migrate_pipe_output(&sb, "go ticker", go_ticker(), &no_args, &[], 2);
}

/// GNU `tail -f` (an inotify watch on the file, then poll(2) with no timeout on the inotify
/// instance) checkpointed while it waits goes on following the file once restored: the lines
/// appended afterwards come out, and nothing else. Its poll used to come back with EINTR,
/// which tail takes as fatal ("error waiting for inotify and output events").
#[test]
fn tail_f_follows_its_file_after_restore() {
    tail_f_checkpointed("events-tail", false);
}

/// The same with `tail -f` stopped and continued before the checkpoint (a user's ^Z and
/// `fg`): the kernel restarts its poll as `restart_syscall`, which the checkpoint must name
/// poll again, or the restored tail fails with EINTR.
#[test]
fn tail_f_stopped_and_continued_follows_its_file_after_restore() {
    tail_f_checkpointed("events-tail-stopped", true);
}

fn tail_f_checkpointed(name: &str, stop_first: bool) {
    let sb = Sandbox::new(name);
    let file = sb.path("tailed.txt");
    let (old, new) = ("1\n2\n3\n4\n5\n", "6\n7\n8\n");
    std::fs::write(&file, old).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    let mut tail = sb.spawn(
        "tail -f",
        "tail",
        &["-f", "tailed.txt"],
        Input::Null,
        Output::Pipe,
    );
    tail.wait_for_stdout("5\n");
    let pid = tail.pid();
    assert!(
        wait_until(TIMEOUT, || in_untimed_poll(pid)),
        "tail -f (pid {pid}) never waited in poll(2)"
    );
    if stop_first {
        send_signal(pid, libc::SIGSTOP);
        assert!(
            wait_until(TIMEOUT, || process_state(pid) == Some('T')),
            "tail -f (pid {pid}) never stopped"
        );
        send_signal(pid, libc::SIGCONT);
        let restarted = wait_until(TIMEOUT, || {
            std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.split(' ').next() == Some(&libc::SYS_restart_syscall.to_string()))
        });
        assert!(
            restarted,
            "tail -f (pid {pid}) never waited in restart_syscall(2)"
        );
    }
    let image = sb.path("tail.img");
    sb.mrunctl().checkpoint_ok(pid, &image);
    let original = tail.finish();
    assert_eq!(original.stdout_text(), old, "tail -f before the checkpoint");

    let mut restored = sb.mrunctl().restore(&image, Input::Null, Output::Pipe);
    // Appended only once the restored tail waits again, so its watch is there to see it.
    let restore_pid = restored.pid();
    let waiting = wait_until(TIMEOUT, || {
        restored.try_status().is_some()
            || descendants(restore_pid).into_iter().any(|d| {
                ns_pids(d).last() == Some(&pid) && tracer_pid(d) == Some(0) && in_untimed_poll(d)
            })
    });
    assert!(waiting, "the restored tail -f never waited in poll(2)");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("opening {}: {e}", file.display()));
    std::io::Write::write_all(&mut f, new.as_bytes())
        .unwrap_or_else(|e| panic!("appending to {}: {e}", file.display()));
    drop(f);
    restored.wait_for_stdout("8\n");
    assert!(
        restored.try_status().is_none(),
        "the restored tail -f stopped following"
    );
    restored.kill();
    let done = restored.finish();
    let got = [original.stdout, done.stdout].concat();
    assert_same_bytes(
        "tail -f across a restore",
        &got,
        format!("{old}{new}").as_bytes(),
    );
}

/// `pid` is blocked in poll(2) with no timeout (`/proc/PID/syscall`: number, then arguments).
fn in_untimed_poll(pid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let nr = words.next().and_then(|w| w.parse::<i64>().ok());
    let timeout = words
        .nth(2)
        .and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok());
    nr == Some(libc::SYS_poll) && timeout.is_some_and(|t| (t as u32 as i32) < 0)
}
