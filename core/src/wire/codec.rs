//! Frame encoding: `u32 length | u8 tag | payload`, on top of tokio-util's length-delimited
//! codec (which enforces the maximum frame size before allocating).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::files::FileMsg;
use super::message::Control;

/// Largest frame accepted: image data is sent in chunks well below it.
pub const MAX_FRAME: usize = 4 << 20;

const TAG_CONTROL: u8 = 1;
const TAG_IMAGE: u8 = 2;
const TAG_STDOUT: u8 = 3;
const TAG_STDERR: u8 = 4;
const TAG_STDIN: u8 = 5;
const TAG_FILES: u8 = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Control(Control),
    Image(Bytes),
    Stdout(Bytes),
    Stderr(Bytes),
    Stdin(Bytes),
    /// A request for home's files or its answer, with its data (see [`super::files`]).
    Files(FileMsg, Bytes),
}

impl Frame {
    /// What the frame is, for a message: a control message as it is (cut short), data frames
    /// by their kind and size, never their bytes.
    pub fn kind(&self) -> String {
        let data = |what: &str, b: &Bytes| format!("{what} ({} bytes)", b.len());
        match self {
            Frame::Control(c) => {
                let mut text = format!("{c:?}");
                if text.len() > 200 {
                    let mut cut = 200;
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    text.truncate(cut);
                    text.push_str("...");
                }
                text
            }
            Frame::Image(b) => data("an image chunk", b),
            Frame::Stdout(b) => data("standard output", b),
            Frame::Stderr(b) => data("standard error", b),
            Frame::Stdin(b) => data("standard input", b),
            Frame::Files(msg, b) => data(&format!("a file message {msg:?}"), b),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    #[error("the peer sent a malformed frame ({0}); is it an mrun agent of the same version?")]
    Malformed(String),
}

pub struct FrameCodec {
    inner: LengthDelimitedCodec,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            inner: LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME)
                .new_codec(),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some(mut body) = self
            .inner
            .decode(src)
            .map_err(|e| WireError::Malformed(e.to_string()))?
        else {
            return Ok(None);
        };
        if body.is_empty() {
            return Err(WireError::Malformed("empty frame".into()));
        }
        let tag = body.get_u8();
        let payload = body.freeze();
        Ok(Some(match tag {
            TAG_CONTROL => Frame::Control(
                postcard::from_bytes(&payload)
                    .map_err(|e| WireError::Malformed(format!("control message: {e}")))?,
            ),
            TAG_IMAGE => Frame::Image(payload),
            TAG_STDOUT => Frame::Stdout(payload),
            TAG_STDERR => Frame::Stderr(payload),
            TAG_STDIN => Frame::Stdin(payload),
            TAG_FILES => {
                let (msg, data) = postcard::take_from_bytes(&payload)
                    .map_err(|e| WireError::Malformed(format!("file message: {e}")))?;
                let data = payload.slice(payload.len() - data.len()..);
                Frame::Files(msg, data)
            }
            other => return Err(WireError::Malformed(format!("unknown frame tag {other}"))),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let mut body = BytesMut::new();
        let (tag, payload) = match frame {
            Frame::Control(c) => {
                let bytes = postcard::to_allocvec(&c)
                    .map_err(|e| WireError::Malformed(format!("encoding: {e}")))?;
                (TAG_CONTROL, Bytes::from(bytes))
            }
            Frame::Image(b) => (TAG_IMAGE, b),
            Frame::Stdout(b) => (TAG_STDOUT, b),
            Frame::Stderr(b) => (TAG_STDERR, b),
            Frame::Stdin(b) => (TAG_STDIN, b),
            Frame::Files(msg, data) => {
                let mut bytes = postcard::to_allocvec(&msg)
                    .map_err(|e| WireError::Malformed(format!("encoding: {e}")))?;
                bytes.extend_from_slice(&data);
                (TAG_FILES, Bytes::from(bytes))
            }
        };
        body.reserve(1 + payload.len());
        body.put_u8(tag);
        body.put_slice(&payload);
        self.inner
            .encode(body.freeze(), dst)
            .map_err(|e| WireError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ended, Hello};

    fn roundtrip(f: Frame) -> Frame {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(f, &mut buf).expect("encode");
        codec
            .decode(&mut buf)
            .expect("decode")
            .expect("a whole frame")
    }

    #[test]
    fn frames_roundtrip() {
        for f in [
            Frame::Control(Control::Hello(Hello::ours())),
            Frame::Control(Control::Exited(Ended::Signaled(6))),
            Frame::Image(Bytes::from_static(b"MRUNIMG\0")),
            Frame::Stdout(Bytes::from_static(b"out")),
            Frame::Stdin(Bytes::new()),
            Frame::Files(
                super::super::files::FileMsg::Ask {
                    id: 7,
                    op: super::super::files::FileOp::Write {
                        handle: 3,
                        offset: 1 << 40,
                    },
                },
                Bytes::from_static(b"written bytes"),
            ),
        ] {
            assert_eq!(roundtrip(f.clone()), f);
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&((MAX_FRAME as u32 + 1).to_be_bytes())[..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 99, 0][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(WireError::Malformed(_))
        ));
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 3, TAG_CONTROL, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn version_mismatch_is_a_sentence() {
        let ours = Hello::ours();
        let mut theirs = Hello::ours();
        theirs.protocol += 1;
        let msg = ours.mismatch(&theirs, "node a").expect("a mismatch");
        assert!(msg.contains("node a") && msg.contains("protocol"));
        assert!(ours.mismatch(&Hello::ours(), "x").is_none());
    }
}
