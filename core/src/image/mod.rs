//! The checkpoint image format: a versioned, checksummed stream of records (header, process
//! state, page chunks raw or compressed, end) with a streaming writer and a validating reader.
//!
//! The byte layout is specified in `docs/image-format.md`. This module never touches a
//! process: the engine fills the [`model`] types and hands over page bytes.

#![forbid(unsafe_code)]

mod compression;
mod error;
pub mod model;
mod pool;
pub mod precopy;
mod reader;
mod record;
mod source;
mod writer;

#[cfg(test)]
mod tests;

pub use compression::{Chooser, Compression};
pub use error::ImageError;
pub use reader::ImageReader;
pub use record::{FORMAT_VERSION, MAGIC, PAGE_SIZE, PRECOPY_MAGIC};
pub use writer::{ImageWriter, PageSource};

/// zstd level used by mrun unless told otherwise: fast enough to outrun the network.
pub const DEFAULT_LEVEL: i32 = 1;

/// Bits of a page record's address that hold the virtual address; the bits above name the
/// process of the job the pages belong to (its index in `JobState::processes`).
pub const ADDRESS_BITS: u32 = 48;

/// The address a page record carries for `addr` of process `index`.
pub fn page_address(index: u32, addr: u64) -> u64 {
    (u64::from(index) << ADDRESS_BITS) | addr
}

/// `(process index, virtual address)` of a page record's address.
pub fn split_page_address(tagged: u64) -> (u32, u64) {
    (
        (tagged >> ADDRESS_BITS) as u32,
        tagged & ((1 << ADDRESS_BITS) - 1),
    )
}
