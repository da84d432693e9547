//! Pre-copy streams: the pages of a job that still runs, sent ahead of its image so that
//! less has to move while it is frozen. A stream is the image framing with its own magic
//! ([`PRECOPY_MAGIC`]) and only Pages records: `prelude Pages* End`. Several may precede an
//! image on one input (one per round); a page sent again replaces what was sent before. The
//! image then carries, for a page that did not change since it was last sent, a Pages record
//! with the `Precopied` encoding and no bytes, which the reader fills from the
//! [`PageStore`].

use std::collections::HashMap;
use std::io::{Chain, Cursor, ErrorKind, Read};

use super::error::ImageError;
use super::reader::ImageReader;
use super::record::{PAGE_SIZE, PRECOPY_MAGIC};

/// The pages the pre-copy streams sent, by (tagged) page address, the last sent kept.
#[derive(Default)]
pub struct PageStore {
    /// The bytes, one chunk per page record read.
    chunks: Vec<Vec<u8>>,
    /// Page address -> (chunk, page within it).
    index: HashMap<u64, (u32, u32)>,
}

impl PageStore {
    /// Pages held.
    pub fn pages(&self) -> usize {
        self.index.len()
    }

    fn insert(&mut self, addr: u64, data: Vec<u8>) {
        let chunk = self.chunks.len() as u32;
        for i in 0..data.len() / PAGE_SIZE {
            self.index
                .insert(addr + (i * PAGE_SIZE) as u64, (chunk, i as u32));
        }
        self.chunks.push(data);
    }

    /// The `npages` pages at `addr` as runs of pages that lie one after the other in the
    /// store, `(address, bytes)`; `None` if one of them was never sent.
    pub(crate) fn runs(&self, addr: u64, npages: u32) -> Option<Vec<(u64, &[u8])>> {
        let mut runs: Vec<(u64, &[u8])> = Vec::new();
        // The run being extended: its address, chunk, first page and length in pages.
        let mut cur: Option<(u64, u32, u32, u32)> = None;
        for i in 0..u64::from(npages) {
            let at = addr + i * PAGE_SIZE as u64;
            let &(chunk, page) = self.index.get(&at)?;
            cur = match cur {
                Some((start, c, first, n)) if c == chunk && first + n == page => {
                    Some((start, c, first, n + 1))
                }
                done => {
                    if let Some(run) = done {
                        runs.push(self.slice(run)?);
                    }
                    Some((at, chunk, page, 1))
                }
            };
        }
        if let Some(run) = cur {
            runs.push(self.slice(run)?);
        }
        Some(runs)
    }

    fn slice(&self, (addr, chunk, first, n): (u64, u32, u32, u32)) -> Option<(u64, &[u8])> {
        let from = first as usize * PAGE_SIZE;
        let bytes = self
            .chunks
            .get(chunk as usize)?
            .get(from..from + n as usize * PAGE_SIZE)?;
        Some((addr, bytes))
    }

    /// Puts the `npages` pages at `addr` into `out`; false if one of them was never sent.
    pub(crate) fn get(&self, addr: u64, npages: u32, out: &mut Vec<u8>) -> bool {
        out.clear();
        for i in 0..u64::from(npages) {
            let Some(&(chunk, page)) = self.index.get(&(addr + i * PAGE_SIZE as u64)) else {
                return false;
            };
            let at = page as usize * PAGE_SIZE;
            let Some(bytes) = self
                .chunks
                .get(chunk as usize)
                .and_then(|c| c.get(at..at + PAGE_SIZE))
            else {
                return false;
            };
            out.extend_from_slice(bytes);
        }
        true
    }
}

/// An input past its pre-copy streams: the bytes read to find there were no more, then the
/// rest.
pub type AfterPrecopy<R> = Chain<Cursor<Vec<u8>>, R>;

/// Reads the pre-copy streams at the start of `input`, if any, into a store, and returns it
/// with the rest of the input (the image), unread.
pub fn read_leading<R: Read>(mut input: R) -> Result<(PageStore, AfterPrecopy<R>), ImageError> {
    let mut store = PageStore::default();
    loop {
        let magic = read_up_to(&mut input, PRECOPY_MAGIC.len())?;
        if magic != PRECOPY_MAGIC {
            return Ok((store, Cursor::new(magic).chain(input)));
        }
        let mut reader = ImageReader::precopy_after_magic(&mut input)?;
        let mut buf = Vec::new();
        while let Some(addr) = reader.next_pages(&mut buf)? {
            store.insert(addr, std::mem::take(&mut buf));
        }
    }
}

fn read_up_to<R: Read>(input: &mut R, n: usize) -> Result<Vec<u8>, ImageError> {
    let mut got = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        match input.read(&mut got[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    got.truncate(filled);
    Ok(got)
}
