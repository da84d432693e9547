//! The one error type of the image module: every way writing or reading an image can fail,
//! with the byte offset where a bad image went wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image i/o failed")]
    Io(#[from] std::io::Error),

    #[error("not an mrun image (bad magic)")]
    NotAnImage,

    #[error(
        "image format version {found} is not supported by this mrun (it reads version \
         {supported}); use a matching mrun"
    )]
    Version { found: u32, supported: u32 },

    #[error(
        "image is truncated at byte {offset}; the checkpoint was not completely written or sent"
    )]
    Truncated { offset: u64 },

    #[error("image is corrupt at byte {offset}: {what}")]
    Corrupt { offset: u64, what: String },

    #[error("image is corrupt at byte {offset}: expected a {expected} record, found {found}")]
    Unexpected {
        offset: u64,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "image record at byte {offset} is too large: a {kind} record of {len} bytes exceeds the \
         maximum of {max} bytes"
    )]
    TooLarge {
        offset: u64,
        kind: &'static str,
        len: u64,
        max: u64,
    },

    /// The caller broke the writer's or reader's contract; this is a bug in mrun, not a bad image.
    #[error("invalid use of the image api: {what} (a bug in mrun)")]
    InvalidUse { what: String },

    #[error("could not read {len} bytes of pages at {addr:#x}")]
    Source {
        addr: u64,
        len: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("could not write {len} bytes of pages at {addr:#x}")]
    Sink {
        addr: u64,
        len: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("could not encode the {what} record")]
    Encode {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
}

impl ImageError {
    pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        ImageError::Corrupt {
            offset,
            what: what.into(),
        }
    }

    pub(crate) fn invalid_use(what: impl Into<String>) -> Self {
        ImageError::InvalidUse { what: what.into() }
    }
}
