//! The home<->agent wire protocol: length-delimited frames carrying either a small control
//! message (postcard) or raw bytes (image data, stdout, stderr, stdin). Specified in
//! `docs/wire-protocol.md`. Never touches processes or sockets itself.

#![forbid(unsafe_code)]

mod codec;
pub mod files;
mod message;

pub use codec::{Frame, FrameCodec, WireError, MAX_FRAME};
pub use message::{
    Control, Ended, Hello, NodeFacts, TermModes, Terminal, WinSize, PROTOCOL_VERSION,
};
