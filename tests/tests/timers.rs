//! Timers survive checkpoint/restore (issue 10): interval timers and POSIX timers of every
//! notification kind keep their ids, fire at the right time (monotonic ones the same distance
//! after the restore, wall-clock ones at their deadline) with their sigev_value, to the right
//! thread; a timer signal already queued is delivered once. The victim (`timers.c`) checks
//! itself.

mod common;

use common::*;
use std::time::Duration;

/// Control: the victim passes when it is never checkpointed.
#[test]
fn timers_victim_passes_without_checkpoint() {
    let sb = Sandbox::new("timers-control");
    let go = sb.touch("go");
    let done = sb
        .spawn_victim("timers", &[go.as_os_str()], Input::Null)
        .finish();
    assert_victim_passed(&done, "the timers victim, never checkpointed");
}

/// A second frozen between checkpoint and restore: monotonic timers do not count it, the
/// realtime one does.
#[test]
fn timers_keep_ids_times_values_and_threads() {
    let sb = Sandbox::new("timers");
    run_state_victim_then(&sb, "timers", &[], false, |_| {
        std::thread::sleep(Duration::from_secs(1))
    })
    .assert_all_pass();
}

/// Twice in a row: the second checkpoint reads the process inside the pid namespace of the
/// first restore (its threads' ids differ from ours there).
#[test]
fn timers_survive_two_hops() {
    let sb = Sandbox::new("timers-hops");
    let (_, done) = run_state_victim_hops(&sb, "timers", &[], 2);
    assert_victim_passed(&done, "the timers victim after 2 checkpoints");
}

/// The path kernels before 6.14 take (no PR_TIMER_CREATE_RESTORE_IDS): ids reproduced by
/// walking the per-process id counter, the gap filled by a placeholder deleted again.
#[test]
fn timer_ids_by_counter() {
    let sb = Sandbox::new("timers-counter");
    let go = sb.path("go");
    let mut victim = sb.spawn_victim("timers", &[go.as_os_str()], Input::Null);
    victim.wait_for_stdout("READY\n");
    let image = sb.path("timers.img");
    sb.mrunctl().checkpoint_ok(victim.pid(), &image);
    victim.finish().assert_signal(libc::SIGKILL);
    sb.touch("go");
    let restored = sb
        .mrunctl()
        .restore_with_env(
            &image,
            &[("MRUN_TIMER_IDS_BY_COUNTER", "1")],
            Input::Null,
            Output::Pipe,
        )
        .finish();
    assert_victim_passed(&restored, "the timers victim restored by the id counter");
}
