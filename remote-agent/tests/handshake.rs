//! `mrun-agent` on its own: its command line, and the version handshake that opens a session.
//! (Building this test also builds the binary the end-to-end suite runs on its nodes.)

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use mrun_core::wire::{Control, Frame, FrameCodec, Hello};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mrun-agent"))
}

#[test]
fn version_names_the_protocol() {
    let out = agent().arg("--version").output().expect("run mrun-agent");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("protocol {}", mrun_core::wire::PROTOCOL_VERSION)),
        "{text}"
    );
}

#[test]
fn arguments_are_refused_with_one_line() {
    let out = agent().arg("--bogus").output().expect("run mrun-agent");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// The frames an agent answers to `hello`, read until it closes its stdout.
fn answers_to(hello: Hello) -> (Vec<Frame>, std::process::ExitStatus, String) {
    let mut child = agent()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mrun-agent");
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(Frame::Control(Control::Hello(hello)), &mut buf)
        .expect("encode");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&buf).expect("send hello");
    drop(stdin);
    let mut raw = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut raw)
        .expect("read answers");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    let mut frames = Vec::new();
    let mut bytes = BytesMut::from(&raw[..]);
    while let Some(f) = codec.decode(&mut bytes).expect("well-formed frames") {
        frames.push(f);
    }
    (frames, status, err)
}

#[test]
fn a_peer_of_another_protocol_version_gets_an_error_on_both_sides() {
    let mut theirs = Hello::ours();
    theirs.protocol += 41;
    let (frames, status, stderr) = answers_to(theirs);
    assert!(
        matches!(frames.first(), Some(Frame::Control(Control::Hello(h))) if *h == Hello::ours())
    );
    match frames.get(1) {
        Some(Frame::Control(Control::Error { message })) => {
            assert!(message.contains("protocol"), "{message}")
        }
        other => panic!("expected an error after the hello, got {other:?}"),
    }
    assert!(!status.success());
    assert!(
        stderr.contains("protocol"),
        "the agent's side says nothing: {stderr:?}"
    );
}

#[test]
fn a_matching_peer_that_hangs_up_ends_the_session_quietly() {
    let (frames, status, stderr) = answers_to(Hello::ours());
    assert_eq!(frames.len(), 1, "only the agent's hello: {frames:?}");
    assert!(status.success(), "{stderr}");
}
