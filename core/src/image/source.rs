//! The reader's view of the input: exact reads with the byte offset tracked for errors, the
//! prelude check, and one framed record at a time with its crc verified. Never reads a byte
//! beyond the record it was asked for.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{ErrorKind, Read};

use super::error::ImageError;
use super::record::{Kind, CRC_LEN, FORMAT_VERSION, FRAME_HEAD_LEN, MAGIC};

pub(crate) struct Source<R> {
    input: R,
    /// Bytes consumed from `input` so far: the offset reported in errors.
    pos: u64,
}

/// Where a verified record started, what it is and its crc (for the chain).
pub(crate) struct RecordInfo {
    pub offset: u64,
    pub kind: Kind,
    pub crc: u32,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(input: R) -> Self {
        Source { input, pos: 0 }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn into_inner(self) -> R {
        self.input
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn read_up_to(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let mut filled = 0;
        while let Some(rest) = buf.get_mut(filled..) {
            if rest.is_empty() {
                break;
            }
            match self.input.read(rest) {
                Ok(0) => break,
                Ok(n) => {
                    let n = n.min(rest.len());
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(filled)
    }

    fn read_full(&mut self, buf: &mut [u8]) -> Result<(), ImageError> {
        if self.read_up_to(buf)? < buf.len() {
            return Err(ImageError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// Checks the magic and the format version.
    pub(crate) fn read_prelude(&mut self) -> Result<(), ImageError> {
        let mut magic = [0u8; MAGIC.len()];
        let n = self.read_up_to(&mut magic)?;
        if magic.get(..n) != MAGIC.get(..n) {
            return Err(ImageError::NotAnImage);
        }
        if n < MAGIC.len() {
            return Err(ImageError::Truncated { offset: self.pos });
        }
        self.read_version()
    }

    /// Checks the format version, which follows the magic.
    pub(crate) fn read_version(&mut self) -> Result<(), ImageError> {
        let mut version = [0u8; 4];
        self.read_full(&mut version)?;
        let found = u32::from_le_bytes(version);
        if found != FORMAT_VERSION {
            return Err(ImageError::Version {
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// Reads the next record into `payload` (resized to its length) and verifies its crc.
    pub(crate) fn read_record(&mut self, payload: &mut Vec<u8>) -> Result<RecordInfo, ImageError> {
        let offset = self.pos;
        let mut head = [0u8; FRAME_HEAD_LEN];
        self.read_full(&mut head)?;
        let [kind_byte, l0, l1, l2, l3] = head;
        let kind = Kind::from_u8(kind_byte).ok_or_else(|| {
            ImageError::corrupt(offset, format!("unknown record kind {kind_byte}"))
        })?;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > kind.max_len() {
            return Err(ImageError::TooLarge {
                offset,
                kind: kind.name(),
                len: u64::from(len),
                max: u64::from(kind.max_len()),
            });
        }
        let len = len as usize;
        // Payload and crc in one read; `resize` only zero-fills when the buffer grows.
        payload.resize(len + CRC_LEN, 0);
        self.read_full(payload)?;
        let stored: [u8; CRC_LEN] = payload
            .get(len..)
            .and_then(|tail| tail.try_into().ok())
            .ok_or(ImageError::Truncated { offset: self.pos })?;
        payload.truncate(len);
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(payload);
        let crc = h.finalize();
        if crc != u32::from_le_bytes(stored) {
            return Err(ImageError::corrupt(
                offset,
                format!("{} record checksum mismatch", kind.name()),
            ));
        }
        Ok(RecordInfo { offset, kind, crc })
    }
}
