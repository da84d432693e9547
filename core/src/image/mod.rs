//! The checkpoint image format: a versioned, checksummed stream of records (header, process
//! state, compressed page chunks, end) with a streaming writer and a validating reader.
//!
//! The byte layout is specified in `docs/image-format.md`. This module never touches a
//! process: the engine fills the [`model`] types and hands over page bytes.

#![forbid(unsafe_code)]

mod error;
pub mod model;
mod pool;
mod reader;
mod record;
mod source;
mod writer;

#[cfg(test)]
mod tests;

pub use error::ImageError;
pub use reader::ImageReader;
pub use record::{FORMAT_VERSION, MAGIC, PAGE_SIZE};
pub use writer::{ImageWriter, DEFAULT_LEVEL};
