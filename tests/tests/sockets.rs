//! Unix socket pairs inside the job travel with it: checkpointed while bytes and messages wait in
//! them, restored, the victims read every byte and every message (with its boundaries) they
//! were sent before the checkpoint, and the pairs still carry data. The socketpair victim checks
//! itself against known patterns; sockets that reach outside the job are refused
//! (`refusals.rs`). Listening unix sockets of the job, and the connections they accepted, come
//! back bound to their names.

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

/// Listeners of the job (a path with mode 0600, an abstract seqpacket name with a backlog of 3,
/// non-blocking, and a name relative to the working directory), the connections they accepted
/// from a child and from the listening process itself, with data waiting both ways: after the
/// restore (its old socket file still in place) every queue reads as it was, accepted ends keep
/// the listener's name, and new connections reach each listener by its name.
#[test]
fn listeners_and_their_connections() {
    let sb = Sandbox::new("sockets-listener");
    let dir = sb.path("");
    run_state_victim(&sb, "listener", &[dir.as_os_str()], false).assert_all_pass();
}

/// The same job restored where its socket file was removed meanwhile: the listener makes it
/// again.
#[test]
fn listener_whose_socket_file_was_removed_after_the_checkpoint() {
    let sb = Sandbox::new("sockets-listener-gone");
    let dir = sb.path("");
    let file = sb.path("srv.sock");
    run_state_victim_then(&sb, "listener", &[dir.as_os_str()], false, |_| {
        std::fs::remove_file(&file).expect("removing srv.sock");
    })
    .assert_all_pass();
}

/// A file of another kind where a listener's socket file was is left alone: the restore is
/// refused in one sentence naming it, that file is untouched, and the old socket file of the
/// listener made before it (moved aside for the new one) is back in its place.
#[test]
fn listener_restore_leaves_another_file_at_its_path_alone() {
    use std::os::unix::fs::MetadataExt;
    let sb = Sandbox::new("sockets-listener-taken");
    let dir = sb.path("");
    let go = sb.path("go");
    let mut victim = sb.spawn_victim("listener", &[go.as_os_str(), dir.as_os_str()], Input::Null);
    victim.wait_for_stdout("READY\n");
    let image = sb.path("listener.img");
    sb.mrunctl().checkpoint_ok(victim.pid(), &image);
    victim.finish();
    let (srv, rel) = (sb.path("srv.sock"), sb.path("rel.sock"));
    let srv_ino = std::fs::symlink_metadata(&srv)
        .expect("stat srv.sock")
        .ino();
    std::fs::remove_file(&rel).expect("removing rel.sock");
    std::fs::write(&rel, "not a socket").expect("writing rel.sock");
    let restored = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    restored.assert_one_line_error(&["rel.sock exists here and is not the socket file"]);
    assert_eq!(
        std::fs::read_to_string(&rel).expect("reading rel.sock"),
        "not a socket"
    );
    let now = std::fs::symlink_metadata(&srv).expect("stat srv.sock after the restore");
    assert_eq!(
        now.ino(),
        srv_ino,
        "srv.sock is the original's socket file again"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("listing the sandbox")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains("mrun-aside"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
