//! mrun-core: the engine (checkpoint/restore), the image format, and the kernel wrappers
//! they stand on.

pub mod arch;
pub mod engine;
pub mod feed;
pub mod files;
pub mod image;
pub mod load;
pub mod policy;
pub mod ranges;
pub mod resource;
pub mod supervise;
pub mod sys;
pub mod trace;
pub mod transfer;
pub mod wire;
