//! The validating image reader: checks the prelude, decodes the header and state records and
//! yields page records in order, decompressing a few records ahead on worker threads while the
//! caller writes the previous pages into the target. Input bytes are untrusted: every failure
//! is an [`ImageError`], never a panic.
//!
//! The reader does not buffer: it issues two reads per record and never reads past the End
//! record, so an image may be followed by other data on the same stream
//! ([`ImageReader::into_inner`]). Wrap a raw file or socket in a `BufReader` only if its reads
//! are costly; a page record is one large read anyway.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use zstd::bulk::Decompressor;

use super::error::ImageError;
use super::model::{Header, JobState};
use super::pool::{default_threads, Pool, Work};
use super::precopy::PageStore;
use super::record::{Encoding, EndInfo, Kind, Tally, MAX_RECORD_PAGES, PAGES_HEAD_LEN, PAGE_SIZE};
use super::source::Source;

/// What [`ImageReader::for_each_pages`] hands each record's pages to, on a worker thread:
/// the record's (tagged) address and the pages' bytes.
pub type PageSink = dyn Fn(u64, &[u8]) -> io::Result<()> + Send + Sync;

/// Page records decompressed ahead per worker thread.
const AHEAD_PER_THREAD: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Header read; the state record comes next.
    AwaitState,
    Pages,
    /// The End record was read and verified.
    Ended,
    Failed,
}

/// What the read-ahead queue holds, in stream order.
enum Ahead {
    /// A page record whose result the pool will deliver.
    Pages,
    /// Where reading stopped: a verified End (`Ok`) or the first error.
    Stop(Result<(), ImageError>),
}

/// Reads one image: [`ImageReader::open`] (header), [`ImageReader::read_state`], then
/// [`ImageReader::next_pages`] until it returns `Ok(None)`. Nothing an image contains may be
/// trusted until `next_pages` has returned `Ok(None)`: only then are the record chain and
/// counts verified. After an error the reader refuses further calls.
pub struct ImageReader<R: Read> {
    src: Source<R>,
    /// Started at the first `next_pages`, so no thread exists while the caller (say) forks.
    pool: Option<Pool<Decompress>>,
    threads: usize,
    tally: Tally,
    stage: Stage,
    queue: VecDeque<Ahead>,
    /// True once the read-ahead reached End or an error: nothing more is read from `src`.
    reading_done: bool,
    free_payloads: Vec<Vec<u8>>,
    free_pages: Vec<Vec<u8>>,
    meta: Vec<u8>,
    /// Set by `for_each_pages`: workers hand the pages there instead of back.
    sink: Option<Arc<PageSink>>,
    /// Where `Precopied` records take their pages from.
    precopied: Option<Arc<PageStore>>,
}

impl<R: Read> ImageReader<R> {
    /// Checks magic and version and reads the header record. Pages are decompressed on one
    /// worker thread per core (at most 4), started by the first `next_pages`.
    pub fn open(input: R) -> Result<(Self, Header), ImageError> {
        Self::open_with_threads(input, default_threads())
    }

    /// As [`ImageReader::open`] with `threads` decompression workers; 0 decompresses on the
    /// caller's thread, without read-ahead.
    pub fn open_with_threads(input: R, threads: usize) -> Result<(Self, Header), ImageError> {
        let mut r = Self::blank(input, threads);
        r.src.read_prelude()?;
        let header = r.read_meta::<Header>(Kind::Header)?;
        Ok((r, header))
    }

    fn blank(input: R, threads: usize) -> Self {
        ImageReader {
            src: Source::new(input),
            pool: None,
            threads,
            tally: Tally::default(),
            stage: Stage::AwaitState,
            queue: VecDeque::new(),
            reading_done: false,
            free_payloads: Vec::new(),
            free_pages: Vec::new(),
            meta: Vec::new(),
            sink: None,
            precopied: None,
        }
    }

    /// A pre-copy stream whose magic was read: checks the version; its pages follow.
    pub(crate) fn precopy_after_magic(input: R) -> Result<Self, ImageError> {
        let mut r = Self::blank(input, default_threads());
        r.src.read_version()?;
        r.stage = Stage::Pages;
        Ok(r)
    }

    /// The pages that `Precopied` records name come from `store`.
    pub fn set_precopied(&mut self, store: Arc<PageStore>) {
        self.precopied = Some(store);
    }

    /// Reads the process state record, which follows the header.
    pub fn read_state(&mut self) -> Result<JobState, ImageError> {
        match self.stage {
            Stage::AwaitState => {}
            Stage::Failed => return Err(used_after_error()),
            _ => return Err(ImageError::invalid_use("read_state called twice")),
        }
        let r = self.read_meta::<JobState>(Kind::State);
        self.stage = if r.is_ok() {
            Stage::Pages
        } else {
            Stage::Failed
        };
        r
    }

    /// Puts the decompressed bytes of the next page record in `buf` (replacing its contents;
    /// its length is a multiple of 4096) and returns their address. `Ok(None)` means the End
    /// record was read and the whole image verified. The buffer handed in is recycled, so
    /// passing the same `Vec` every time avoids allocations.
    pub fn next_pages(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, ImageError> {
        match self.stage {
            Stage::Pages => {}
            Stage::Ended => return Ok(None),
            Stage::Failed => return Err(used_after_error()),
            Stage::AwaitState => {
                return Err(ImageError::invalid_use("next_pages before read_state"))
            }
        }
        let r = self.start_pool().and_then(|()| {
            self.fill();
            self.take_next(buf)
        });
        match &r {
            Ok(None) => self.stage = Stage::Ended,
            Err(_) => self.stage = Stage::Failed,
            Ok(Some(_)) => {}
        }
        r
    }

    /// Hands the pages of every remaining record to `sink`, on the worker threads, several
    /// records at a time (records of one image never overlap, so their order does not
    /// matter), while this thread reads ahead; returns the number of pages once the End
    /// record verified the whole image. With no worker thread, `sink` runs on this one. A
    /// `sink` error stops the reading and is returned as [`ImageError::Sink`].
    pub fn for_each_pages(&mut self, sink: Arc<PageSink>) -> Result<u64, ImageError> {
        self.sink = Some(sink);
        let mut unused = Vec::new();
        let r = loop {
            match self.next_pages(&mut unused) {
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.sink = None;
        r.map(|()| self.tally.end_info().pages)
    }

    /// Bytes consumed from the input so far (read-ahead included).
    pub fn bytes_read(&self) -> u64 {
        self.src.pos()
    }

    /// The input, positioned just after the End record once `next_pages` returned `Ok(None)`.
    pub fn into_inner(self) -> R {
        self.src.into_inner()
    }

    /// Start the decompression workers now rather than at the first [`Self::next_pages`]: for
    /// callers about to enter a state where threads cannot be created (after
    /// `unshare(CLONE_NEWPID)`, the kernel refuses new threads to the calling thread).
    pub fn start_workers(&mut self) -> Result<(), ImageError> {
        self.start_pool()
    }

    fn start_pool(&mut self) -> Result<(), ImageError> {
        if self.pool.is_none() {
            let pool = Pool::new(self.threads, AHEAD_PER_THREAD, "mrun-unzstd", || {
                Ok(Decompress {
                    zstd: Decompressor::new()?,
                })
            })?;
            self.pool = Some(pool);
        }
        Ok(())
    }

    fn pool(&mut self) -> Result<&mut Pool<Decompress>, ImageError> {
        self.pool
            .as_mut()
            .ok_or_else(|| ImageError::invalid_use("decompression pool not started"))
    }

    fn read_meta<T: DeserializeOwned>(&mut self, kind: Kind) -> Result<T, ImageError> {
        let mut payload = std::mem::take(&mut self.meta);
        let rec = self.src.read_record(&mut payload)?;
        if rec.kind != kind {
            return Err(ImageError::Unexpected {
                offset: rec.offset,
                expected: kind.name(),
                found: rec.kind.name(),
            });
        }
        let (value, rest) = postcard::take_from_bytes::<T>(&payload).map_err(|e| {
            ImageError::corrupt(
                rec.offset,
                format!("{} record does not decode: {e}", kind.name()),
            )
        })?;
        if !rest.is_empty() {
            return Err(ImageError::corrupt(
                rec.offset,
                format!(
                    "{} trailing bytes in the {} record",
                    rest.len(),
                    kind.name()
                ),
            ));
        }
        self.tally.add(rec.crc, 0);
        self.meta = payload;
        Ok(value)
    }

    /// Reads records ahead until the pool is busy enough or End/an error is reached.
    fn fill(&mut self) {
        while !self.reading_done
            && (self.queue.is_empty() || !self.pool.as_ref().is_some_and(Pool::is_full))
        {
            match self.read_ahead_one() {
                Ok(true) => self.queue.push_back(Ahead::Pages),
                Ok(false) => {
                    self.queue.push_back(Ahead::Stop(Ok(())));
                    self.reading_done = true;
                }
                Err(e) => {
                    self.queue.push_back(Ahead::Stop(Err(e)));
                    self.reading_done = true;
                }
            }
        }
    }

    /// Reads one record: a page record goes to a worker (true); End is verified (false).
    fn read_ahead_one(&mut self) -> Result<bool, ImageError> {
        let mut payload = self.free_payloads.pop().unwrap_or_default();
        let rec = self.src.read_record(&mut payload)?;
        match rec.kind {
            Kind::Pages => {
                let (addr, npages, encoding) = parse_pages_head(&payload, rec.offset)?;
                self.tally.add(rec.crc, u64::from(npages));
                let out = self.free_pages.pop().unwrap_or_default();
                let sink = self.sink.clone();
                let store = self.precopied.clone();
                let bytes = payload.len();
                self.pool()?.submit(
                    Job {
                        offset: rec.offset,
                        addr,
                        npages,
                        encoding,
                        payload,
                        out,
                        sink,
                        store,
                    },
                    bytes,
                )?;
                Ok(true)
            }
            Kind::End => {
                let end = EndInfo::parse(&payload)
                    .ok_or_else(|| ImageError::corrupt(rec.offset, "malformed end record"))?;
                verify_end(&end, &self.tally.end_info(), rec.offset)?;
                Ok(false)
            }
            other => Err(ImageError::Unexpected {
                offset: rec.offset,
                expected: "pages or end",
                found: other.name(),
            }),
        }
    }

    fn take_next(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, ImageError> {
        match self.queue.pop_front() {
            Some(Ahead::Pages) => {
                let Some(done) = self.pool()?.recv()? else {
                    return Err(ImageError::invalid_use(
                        "page record lost by the read-ahead",
                    ));
                };
                let Unpacked {
                    addr,
                    mut payload,
                    mut out,
                    result,
                } = done;
                result?;
                std::mem::swap(buf, &mut out);
                out.clear();
                payload.clear();
                self.free_pages.push(out);
                self.free_payloads.push(payload);
                Ok(Some(addr))
            }
            Some(Ahead::Stop(r)) => r.map(|()| None),
            None => Err(ImageError::invalid_use(
                "read-ahead queue empty before the end",
            )),
        }
    }
}

fn used_after_error() -> ImageError {
    ImageError::invalid_use("image reader used after an earlier error")
}

/// Validates a page record's `addr`, `npages` and `encoding`; the page bytes follow them.
fn parse_pages_head(payload: &[u8], offset: u64) -> Result<(u64, u32, Encoding), ImageError> {
    let (addr, rest) = payload
        .split_first_chunk::<8>()
        .ok_or_else(|| ImageError::corrupt(offset, "pages record shorter than its header"))?;
    let (npages, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| ImageError::corrupt(offset, "pages record shorter than its header"))?;
    let encoding = match rest.first() {
        None => {
            return Err(ImageError::corrupt(
                offset,
                "pages record shorter than its header",
            ))
        }
        Some(&b) => Encoding::from_u8(b).ok_or_else(|| {
            ImageError::corrupt(offset, format!("pages record has unknown encoding {b}"))
        })?,
    };
    let addr = u64::from_le_bytes(*addr);
    let npages = u32::from_le_bytes(*npages);
    if npages == 0 || npages > MAX_RECORD_PAGES {
        return Err(ImageError::corrupt(
            offset,
            format!("pages record holds {npages} pages (1..={MAX_RECORD_PAGES} allowed)"),
        ));
    }
    let bytes = u64::from(npages) * PAGE_SIZE as u64;
    if addr & (PAGE_SIZE as u64 - 1) != 0 || addr.checked_add(bytes).is_none() {
        return Err(ImageError::corrupt(
            offset,
            format!("pages record address {addr:#x} is not page aligned or overflows"),
        ));
    }
    Ok((addr, npages, encoding))
}

fn verify_end(end: &EndInfo, seen: &EndInfo, offset: u64) -> Result<(), ImageError> {
    if end.page_records != seen.page_records || end.pages != seen.pages {
        return Err(ImageError::corrupt(
            offset,
            format!(
                "end record counts {} page records and {} pages, the image has {} and {}",
                end.page_records, end.pages, seen.page_records, seen.pages
            ),
        ));
    }
    if end.chain != seen.chain {
        return Err(ImageError::corrupt(
            offset,
            "record chain checksum mismatch: a record was dropped, duplicated or reordered",
        ));
    }
    Ok(())
}

/// A decompression worker's zstd context, reused for every record.
struct Decompress {
    zstd: Decompressor<'static>,
}

struct Job {
    offset: u64,
    addr: u64,
    npages: u32,
    encoding: Encoding,
    /// The whole record payload: `addr`, `npages`, `encoding`, then the page bytes.
    payload: Vec<u8>,
    /// Reused output buffer.
    out: Vec<u8>,
    sink: Option<Arc<PageSink>>,
    store: Option<Arc<PageStore>>,
}

struct Unpacked {
    addr: u64,
    payload: Vec<u8>,
    out: Vec<u8>,
    result: Result<(), ImageError>,
}

impl Work for Decompress {
    type Job = Job;
    type Out = Unpacked;

    fn run(&mut self, job: Job) -> Unpacked {
        let Job {
            offset,
            addr,
            npages,
            encoding,
            payload,
            mut out,
            sink,
            store,
        } = job;
        let from = Unpack {
            addr,
            npages,
            encoding,
            offset,
            store: store.as_deref(),
        };
        // Pre-copied pages go to a sink straight from the store, in runs.
        if let (Encoding::Precopied, Some(sink)) = (encoding, &sink) {
            let result = precopied_runs(&payload, &from).and_then(|runs| {
                runs.into_iter().try_for_each(|(at, data)| {
                    sink(at, data).map_err(|source| ImageError::Sink {
                        addr: super::split_page_address(at).1,
                        len: data.len(),
                        source,
                    })
                })
            });
            return Unpacked {
                addr,
                payload,
                out,
                result,
            };
        }
        let result =
            unpack(&mut self.zstd, &payload, &from, &mut out).and_then(|pages| match sink {
                None => {
                    if let Some(raw) = pages {
                        out.clear();
                        out.extend_from_slice(raw);
                    }
                    Ok(())
                }
                Some(sink) => {
                    let data = pages.unwrap_or(&out);
                    sink(addr, data).map_err(|source| ImageError::Sink {
                        addr: super::split_page_address(addr).1,
                        len: data.len(),
                        source,
                    })
                }
            });
        Unpacked {
            addr,
            payload,
            out,
            result,
        }
    }
}

/// What a worker knows of the record it unpacks.
struct Unpack<'s> {
    addr: u64,
    npages: u32,
    encoding: Encoding,
    offset: u64,
    store: Option<&'s PageStore>,
}

fn holds_bytes(offset: u64) -> ImageError {
    ImageError::corrupt(offset, "a pre-copied pages record holds bytes")
}

fn not_precopied(addr: u64, offset: u64) -> ImageError {
    ImageError::corrupt(
        offset,
        format!(
            "the pages at {:#x} were not sent ahead of the image (pre-copy)",
            super::split_page_address(addr).1
        ),
    )
}

/// A record's pages: `Some` the raw bytes inside `payload`, or `None` when they were
/// decompressed (or taken from the pre-copy store) into `out`.
fn unpack<'p>(
    zstd: &mut Decompressor<'static>,
    payload: &'p [u8],
    rec: &Unpack<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<&'p [u8]>, ImageError> {
    let Unpack {
        npages,
        encoding,
        offset,
        ..
    } = *rec;
    let expected = npages as usize * PAGE_SIZE;
    let body = payload
        .get(PAGES_HEAD_LEN..)
        .ok_or_else(|| ImageError::corrupt(offset, "pages record shorter than its header"))?;
    match encoding {
        Encoding::Raw if body.len() == expected => Ok(Some(body)),
        Encoding::Raw => Err(ImageError::corrupt(
            offset,
            format!(
                "raw pages record holds {} bytes, it announces {expected}",
                body.len()
            ),
        )),
        Encoding::Zstd => decompress(zstd, body, expected, out, offset).map(|()| None),
        Encoding::Precopied => {
            out.clear();
            for (_, bytes) in precopied_runs(payload, rec)? {
                out.extend_from_slice(bytes);
            }
            Ok(None)
        }
    }
}

/// The pages a `Precopied` record names, as the store's runs; an error when the record holds
/// bytes or names a page that was not sent ahead.
fn precopied_runs<'s>(
    payload: &[u8],
    rec: &Unpack<'s>,
) -> Result<Vec<(u64, &'s [u8])>, ImageError> {
    if payload.len() != PAGES_HEAD_LEN {
        return Err(holds_bytes(rec.offset));
    }
    rec.store
        .and_then(|store| store.runs(rec.addr, rec.npages))
        .ok_or_else(|| not_precopied(rec.addr, rec.offset))
}

fn decompress(
    zstd: &mut Decompressor<'static>,
    frame: &[u8],
    expected: usize,
    out: &mut Vec<u8>,
    offset: u64,
) -> Result<(), ImageError> {
    out.clear();
    out.reserve(expected);
    let n = zstd
        .decompress_to_buffer(frame, out)
        .map_err(|e| ImageError::corrupt(offset, format!("page data does not decompress: {e}")))?;
    if n != expected || out.len() != expected {
        return Err(ImageError::corrupt(
            offset,
            format!("page data decompresses to {n} bytes, the record announces {expected}"),
        ));
    }
    Ok(())
}
