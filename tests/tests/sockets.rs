//! Unix socket pairs inside the job travel with it: checkpointed while bytes and messages wait in
//! them, restored, the victims read every byte and every message (with its boundaries) they
//! were sent before the checkpoint, and the pairs still carry data. The socketpair victim checks
//! itself against known patterns; sockets that reach outside the job are refused
//! (`refusals.rs`).

mod common;

use common::*;
use std::ffi::OsStr;

/// A parent and its child hold one end each of a stream, a seqpacket and a datagram pair, with
/// bytes and messages (one empty datagram among them) queued both ways, the parent's stream end
/// shut down for writing and its datagram end non-blocking: after the restore each reads all of
/// it, byte for byte and message for message, and a ping-pong still crosses the pairs.
#[test]
fn socket_pairs_between_parent_and_child() {
    let sb = Sandbox::new("sockets-tree");
    run_state_victim(&sb, "socketpair", &[OsStr::new("tree")], false).assert_all_pass();
}

/// Workers that wrote their results into socket pairs and exited: the parent holds the only
/// end left of each, results queued; after the restore it reads them all, then the end of each
/// connection.
#[test]
fn socket_pairs_whose_peer_is_closed() {
    let sb = Sandbox::new("sockets-closed");
    run_state_victim(&sb, "socketpair", &[OsStr::new("closed")], false).assert_all_pass();
}

/// One process holding both ends of a stream, a seqpacket and a datagram pair, data queued in
/// both directions, options set (SO_RCVTIMEO, SO_SNDBUF), an end non-blocking and one shut down
/// for writing: checkpointed and restored twice in a row (the second checkpoint copies the
/// queues the first restore refilled), it finds all of it as it left it.
#[test]
fn socket_pairs_within_one_process_two_hops() {
    let sb = Sandbox::new("sockets-self");
    let (_, done) = run_state_victim_hops(&sb, "socketpair", &[OsStr::new("self")], 2);
    assert_victim_passed(&done, "the twice-restored socketpair victim");
}

/// Copying the queues leaves them in place: after `checkpoint --leave-running` the original
/// still reads every byte and message, and so does the restored copy.
#[test]
fn checkpoint_leaves_socket_queues_in_place() {
    let sb = Sandbox::new("sockets-leave");
    let go = sb.path("go");
    let args = [go.as_os_str(), OsStr::new("self")];
    let mut victim = sb.spawn_victim("socketpair", &args, Input::Null);
    victim.wait_for_stdout("READY\n");
    let image = sb.path("leave.img");
    sb.mrunctl()
        .checkpoint_with(victim.pid(), image.as_os_str(), &["--leave-running"], &[])
        .assert_success();
    sb.touch("go");
    assert_victim_passed(&victim.finish(), "the socketpair victim left running");
    let restored = sb.mrunctl().restore(&image, Input::Null, Output::Pipe);
    assert_victim_passed(&restored.finish(), "the restored socketpair victim");
}
