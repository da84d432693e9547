//! What the bench binaries share: `mrun-bench` (checkpoint/restore against a plain copy),
//! `mrun-bench-migrate` (migration over SSH against a plain SSH transfer, and `mrun`'s start
//! cost) and `mrun-bench-cluster` (a batch on two emulated machines against home alone and
//! GNU parallel). All drive the real CLI as a user would; none links the engine.

pub mod buf;
pub mod criu;
pub mod entry;
pub mod measure;
pub mod mrun;
pub mod node;
pub mod pattern;
pub mod report;
pub mod scratch;
pub mod sys;
pub mod victim;
