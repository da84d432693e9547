//! Record framing shared by the writer and the reader: the stream prelude, record kinds, size
//! limits, the frame checksum and the End record's payload. Knows nothing about I/O.
//!
//! A record is `kind: u8, len: u32 LE, payload[len], crc32: u32 LE`, the crc covering kind, len
//! and payload. See `docs/image-format.md`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde::Serialize;

use super::error::ImageError;

/// The first 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"MRUNIMG\0";
/// The first 8 bytes of a pre-copy stream (pages sent ahead of an image; see `precopy.rs`).
pub const PRECOPY_MAGIC: [u8; 8] = *b"MRUNPRE\0";
/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 7;
/// Page size of the page records (x86_64 base pages).
pub const PAGE_SIZE: usize = 4096;

/// Magic plus the version.
pub(crate) const PRELUDE_LEN: usize = 12;
/// `kind` and `len` in front of every payload.
pub(crate) const FRAME_HEAD_LEN: usize = 5;
pub(crate) const CRC_LEN: usize = 4;
/// `addr: u64`, `npages: u32` and `encoding: u8` in front of the page bytes of a Pages record.
pub(crate) const PAGES_HEAD_LEN: usize = 13;
/// Pages per record the writer produces (1 MiB).
pub(crate) const CHUNK_PAGES: usize = 256;
pub(crate) const CHUNK_BYTES: usize = CHUNK_PAGES * PAGE_SIZE;
/// Pages per record a reader accepts (4 MiB), so a future writer may use bigger chunks.
pub(crate) const MAX_RECORD_PAGES: u32 = 1024;
/// Payload limits: they bound what a reader allocates for one record.
pub(crate) const MAX_META_LEN: u32 = 64 << 20;
pub(crate) const MAX_PAGES_LEN: u32 = 16 << 20;
pub(crate) const END_LEN: u32 = 20;

/// How a Pages record holds its pages (the byte after `npages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The pages' bytes as they are, `npages * 4096` of them.
    Raw = 0,
    /// One or more zstd frames that decompress to the pages' bytes.
    Zstd = 1,
    /// No bytes: the pages are those the pre-copy streams before the image sent last for
    /// these addresses.
    Precopied = 2,
}

impl Encoding {
    pub(crate) fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            2 => Some(Encoding::Precopied),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Header = 1,
    State = 2,
    Pages = 3,
    End = 4,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Header),
            2 => Some(Kind::State),
            3 => Some(Kind::Pages),
            4 => Some(Kind::End),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Header => "header",
            Kind::State => "state",
            Kind::Pages => "pages",
            Kind::End => "end",
        }
    }

    /// Largest payload a record of this kind may have.
    pub(crate) fn max_len(self) -> u32 {
        match self {
            Kind::Header | Kind::State => MAX_META_LEN,
            Kind::Pages => MAX_PAGES_LEN,
            Kind::End => END_LEN,
        }
    }
}

pub(crate) fn prelude(magic_bytes: &[u8; 8]) -> [u8; PRELUDE_LEN] {
    let mut p = [0u8; PRELUDE_LEN];
    let (magic, version) = p.split_at_mut(MAGIC.len());
    magic.copy_from_slice(magic_bytes);
    version.copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p
}

/// The crc of a record whose frame head and payload are `framed` (`kind, len, payload`).
pub(crate) fn frame_crc(framed: &[u8]) -> u32 {
    crc32fast::hash(framed)
}

/// Builds a whole record (head, payload, crc) in `out`, returning its crc.
pub(crate) fn encode_record(
    kind: Kind,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<u32, ImageError> {
    let len = checked_len(kind, payload.len())?;
    out.clear();
    out.push(kind as u8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = frame_crc(out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(crc)
}

/// Serializes `value` with postcard and frames it as a `kind` record in `out`.
pub(crate) fn encode_meta<T: Serialize>(
    kind: Kind,
    value: &T,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<u32, ImageError> {
    scratch.clear();
    let payload = postcard::to_extend(value, std::mem::take(scratch)).map_err(|source| {
        ImageError::Encode {
            what: kind.name(),
            source,
        }
    })?;
    let crc = encode_record(kind, &payload, out);
    *scratch = payload;
    crc
}

fn checked_len(kind: Kind, len: usize) -> Result<u32, ImageError> {
    match u32::try_from(len) {
        Ok(l) if l <= kind.max_len() => Ok(l),
        _ => Err(ImageError::TooLarge {
            offset: 0,
            kind: kind.name(),
            len: len as u64,
            max: u64::from(kind.max_len()),
        }),
    }
}

/// The End record's payload: totals over the Pages records and the chained crc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct EndInfo {
    pub page_records: u64,
    pub pages: u64,
    /// crc32 over the little-endian crc fields of every record before End, in stream order.
    pub chain: u32,
}

impl EndInfo {
    pub(crate) fn to_bytes(self) -> [u8; END_LEN as usize] {
        let mut b = [0u8; END_LEN as usize];
        let (records, rest) = b.split_at_mut(8);
        let (pages, chain) = rest.split_at_mut(8);
        records.copy_from_slice(&self.page_records.to_le_bytes());
        pages.copy_from_slice(&self.pages.to_le_bytes());
        chain.copy_from_slice(&self.chain.to_le_bytes());
        b
    }

    pub(crate) fn parse(payload: &[u8]) -> Option<EndInfo> {
        let (records, rest) = payload.split_first_chunk::<8>()?;
        let (pages, rest) = rest.split_first_chunk::<8>()?;
        let (chain, rest) = rest.split_first_chunk::<4>()?;
        if !rest.is_empty() {
            return None;
        }
        Some(EndInfo {
            page_records: u64::from_le_bytes(*records),
            pages: u64::from_le_bytes(*pages),
            chain: u32::from_le_bytes(*chain),
        })
    }
}

/// Running totals that both sides keep to build or check the End record.
#[derive(Default)]
pub(crate) struct Tally {
    page_records: u64,
    pages: u64,
    chain: crc32fast::Hasher,
}

impl Tally {
    /// Accounts for one record (any kind but End) with crc `crc` holding `pages` pages.
    pub(crate) fn add(&mut self, crc: u32, pages: u64) {
        self.chain.update(&crc.to_le_bytes());
        if pages > 0 {
            self.page_records += 1;
            self.pages += pages;
        }
    }

    pub(crate) fn end_info(&self) -> EndInfo {
        EndInfo {
            page_records: self.page_records,
            pages: self.pages,
            chain: self.chain.clone().finalize(),
        }
    }
}
