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
use crate::ranges::RangeSet;
use crate::sys::placed::PlacedPages;

/// The pages the pre-copy streams sent, by (tagged) page address, the last sent kept. The
/// first process's pages are held at their own addresses where this process has them free
/// ([`PlacedPages`]), so that a restore can fork the process from here with its pages in place;
/// the others, and pages whose address is taken here, are kept in chunks.
#[derive(Default)]
pub struct PageStore {
    /// The bytes of pages not held, one chunk per page record read.
    chunks: Vec<Vec<u8>>,
    /// Page address -> where its last version is.
    index: HashMap<u64, Place>,
    held: PlacedPages,
    /// (Tagged) pages whose last version is in a chunk: where a held page may be stale.
    chunked: RangeSet,
}

#[derive(Clone, Copy)]
enum Place {
    /// At its own address (untagged: the first process's).
    Held,
    /// In a chunk: (chunk, page within it).
    Chunk(u32, u32),
}

impl PageStore {
    /// Pages held.
    pub fn pages(&self) -> usize {
        self.index.len()
    }

    /// The address ranges of the first process whose pages are held at their own address
    /// (every page in them was sent).
    pub fn held(&self) -> &PlacedPages {
        &self.held
    }

    /// Keeps the pages of `data` (at `addr`): copied into place, `data` left for the next
    /// record (a fresh buffer per record would fault in every page twice), or taken as a chunk.
    fn insert(&mut self, addr: u64, data: &mut Vec<u8>) {
        let (process, at) = super::split_page_address(addr);
        let pages = data.len() / PAGE_SIZE;
        if process == 0 && self.held.place(at, data) {
            for i in 0..pages {
                self.index
                    .insert(addr + (i * PAGE_SIZE) as u64, Place::Held);
            }
            return;
        }
        self.chunked.insert(addr..addr + data.len() as u64);
        let chunk = self.chunks.len() as u32;
        for i in 0..pages {
            self.index
                .insert(addr + (i * PAGE_SIZE) as u64, Place::Chunk(chunk, i as u32));
        }
        self.chunks.push(std::mem::take(data));
    }

    /// The `npages` pages at `addr` as runs of pages that lie one after the other in the
    /// store, `(address, bytes)`; `None` if one of them was never sent. A held run's bytes
    /// are the held pages themselves, at the run's own (untagged) address.
    pub(crate) fn runs(&self, addr: u64, npages: u32) -> Option<Vec<(u64, &[u8])>> {
        let len = npages as usize * PAGE_SIZE;
        let (process, at) = super::split_page_address(addr);
        // All held and none sent again into a chunk: one run, no page looked up.
        if process == 0 && !self.chunked.touches(addr, addr + len as u64) {
            if let Some(bytes) = self.held.bytes(at, len) {
                return Some(vec![(addr, bytes)]);
            }
        }
        let mut runs: Vec<(u64, &[u8])> = Vec::new();
        // The run being extended: its address, where its first page is, its length.
        let mut cur: Option<(u64, Place, u32)> = None;
        for i in 0..u64::from(npages) {
            let at = addr + i * PAGE_SIZE as u64;
            let &place = self.index.get(&at)?;
            cur = match cur {
                Some((start, first, n)) if follows(first, n, place) => Some((start, first, n + 1)),
                done => {
                    if let Some(run) = done {
                        runs.push(self.slice(run)?);
                    }
                    Some((at, place, 1))
                }
            };
        }
        if let Some(run) = cur {
            runs.push(self.slice(run)?);
        }
        Some(runs)
    }

    fn slice(&self, (addr, first, n): (u64, Place, u32)) -> Option<(u64, &[u8])> {
        let len = n as usize * PAGE_SIZE;
        let bytes = match first {
            Place::Held => self.held.bytes(super::split_page_address(addr).1, len)?,
            Place::Chunk(chunk, page) => {
                let from = page as usize * PAGE_SIZE;
                self.chunks.get(chunk as usize)?.get(from..from + len)?
            }
        };
        Some((addr, bytes))
    }
}

/// Whether a page at `place` continues a run of `n` pages that starts at `first`: held pages
/// always do (the run's addresses are consecutive), chunk pages when next in the same chunk.
fn follows(first: Place, n: u32, place: Place) -> bool {
    match (first, place) {
        (Place::Held, Place::Held) => true,
        (Place::Chunk(c, p), Place::Chunk(c2, p2)) => c == c2 && p + n == p2,
        _ => false,
    }
}

/// An input past its pre-copy streams: the bytes read to find there were no more, then the
/// rest.
pub type AfterPrecopy<R> = Chain<Cursor<Vec<u8>>, R>;

/// Reads the pre-copy streams at the start of `input`, if any, into a store, and returns it
/// with the rest of the input (the image), unread.
pub fn read_leading<R: Read>(input: R) -> Result<(PageStore, AfterPrecopy<R>), ImageError> {
    read_leading_reporting(input, &mut |_| {})
}

/// As [`read_leading`], calling `taken(n)` once the `n`th stream (from 1) is all in the
/// store, before reading on: the sender may wait for it (a pre-copy round ends there).
pub fn read_leading_reporting<R: Read>(
    mut input: R,
    taken: &mut dyn FnMut(u32),
) -> Result<(PageStore, AfterPrecopy<R>), ImageError> {
    let mut store = PageStore::default();
    let mut streams = 0;
    loop {
        let magic = read_up_to(&mut input, PRECOPY_MAGIC.len())?;
        if magic != PRECOPY_MAGIC {
            return Ok((store, Cursor::new(magic).chain(input)));
        }
        let mut reader = ImageReader::precopy_after_magic(&mut input)?;
        let mut buf = Vec::new();
        while let Some(addr) = reader.next_pages(&mut buf)? {
            store.insert(addr, &mut buf);
        }
        streams += 1;
        taken(streams);
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
