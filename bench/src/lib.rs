//! What the bench binaries share: `mrun-bench` (checkpoint/restore against a plain copy) and
//! `mrun-bench-migrate` (migration over SSH against a plain SSH transfer, and `mrun`'s start
//! cost). Both drive the real CLI as a user would; neither links the engine.

pub mod buf;
pub mod measure;
pub mod pattern;
pub mod report;
pub mod scratch;
pub mod sys;
pub mod victim;
