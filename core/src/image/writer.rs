//! The streaming image writer: frames the header and state records, batches page data into
//! records of up to 1 MiB, has worker threads fetch (from the process, for a checkpoint),
//! compress or copy them, and writes the records in order.
//!
//! It owns no file and does no buffering beyond one record: every record reaches `out` as a
//! single `write_all`, so an unbuffered socket or file is fine.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use zstd::bulk::Compressor;

use super::compression::{Choice, Chooser, Compression, Sample, PROBE_SLICE};
use super::error::ImageError;
use super::model::{Header, JobState};
use super::pool::{default_threads, Pool, Work};
use super::record::{
    encode_meta, encode_record, prelude, Encoding, Kind, Tally, CHUNK_BYTES, CRC_LEN,
    FRAME_HEAD_LEN, MAGIC, MAX_RECORD_PAGES, PAGES_HEAD_LEN, PAGE_SIZE, PRECOPY_MAGIC,
};

/// Where a worker thread fetches page bytes from: a process's memory, for a checkpoint.
pub trait PageSource: Send + Sync + 'static {
    /// Fills `buf` with the bytes at `addr` (the source's own addressing).
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// Chunks queued per worker: one being worked on, one waiting.
const JOBS_PER_THREAD: usize = 2;

/// Page bytes the caller's thread works itself before the workers start: a small image (a
/// 1 MiB process, most of `mrun --each`'s jobs) is written before threads would have started.
const INLINE_BYTES: usize = 2 << 20;

/// Records are at most this large while the caller's thread works them: one buffer, reused,
/// whose first touch (a page fault per page) costs less than a 1 MiB one's, here and in the
/// reader that takes them back.
const INLINE_CHUNK_BYTES: usize = 256 << 10;

/// Writes one image to `out`: [`ImageWriter::new`] (header), [`ImageWriter::write_state`]
/// once, [`ImageWriter::write_pages`] or [`ImageWriter::read_pages`] any number of times, then
/// [`ImageWriter::finish`]. After an error the writer refuses further calls; the partial image
/// must be discarded.
pub struct ImageWriter<W: Write> {
    out: W,
    pool: Pool<Encoder>,
    tally: Tally,
    chooser: Chooser,
    /// The chunk being filled by `write_pages`; contiguous calls share a record.
    cur: Option<Chunk>,
    free_chunks: Vec<Vec<u8>>,
    free_records: Vec<Vec<u8>>,
    meta: Vec<u8>,
    scratch: Vec<u8>,
    written: u64,
    state_written: bool,
    failed: bool,
}

struct Chunk {
    addr: u64,
    data: Vec<u8>,
}

impl<W: Write> ImageWriter<W> {
    /// Starts an image: writes the magic, the format version and the header record. Pages are
    /// fetched and compressed on one worker thread per core (at most 4).
    pub fn new(out: W, header: &Header, compression: Compression) -> Result<Self, ImageError> {
        Self::with_threads(out, header, compression, default_threads())
    }

    /// As [`ImageWriter::new`] with `threads` workers; 0 does all the work on the caller's
    /// thread.
    pub fn with_threads(
        out: W,
        header: &Header,
        compression: Compression,
        threads: usize,
    ) -> Result<Self, ImageError> {
        let mut w = Self::start(out, &MAGIC, compression, threads)?;
        w.write_meta(Kind::Header, header)?;
        Ok(w)
    }

    /// Starts a pre-copy stream: pages of a job still running, sent ahead of its image
    /// (prelude with [`PRECOPY_MAGIC`], then [`ImageWriter::read_pages`] any number of times,
    /// then [`ImageWriter::finish`]; no header, no state). See `precopy.rs`.
    pub fn precopy(out: W, compression: Compression) -> Result<Self, ImageError> {
        let mut w = Self::start(out, &PRECOPY_MAGIC, compression, default_threads())?;
        w.state_written = true;
        Ok(w)
    }

    fn start(
        out: W,
        magic: &[u8; 8],
        compression: Compression,
        threads: usize,
    ) -> Result<Self, ImageError> {
        let level = compression.level();
        let pool = Pool::lazy(
            threads,
            JOBS_PER_THREAD,
            "mrun-pages",
            INLINE_BYTES,
            move || {
                Ok(Encoder {
                    zstd: match level {
                        Some(l) => Some(Compressor::new(l)?),
                        None => None,
                    },
                    probe: Vec::new(),
                })
            },
        )?;
        let mut w = ImageWriter {
            out,
            pool,
            tally: Tally::default(),
            chooser: Chooser::new(compression, threads.max(1)),
            cur: None,
            free_chunks: Vec::new(),
            free_records: Vec::new(),
            meta: Vec::new(),
            scratch: Vec::new(),
            written: 0,
            state_written: false,
            failed: false,
        };
        let p = prelude(magic);
        w.out.write_all(&p)?;
        w.written = p.len() as u64;
        Ok(w)
    }

    /// What this writer measured so far, for the next image on the same sink.
    pub fn measured(&self) -> Chooser {
        self.chooser.clone()
    }

    /// Start from what an earlier image on the same sink measured (before any pages).
    pub fn carry_on(&mut self, measured: Chooser) {
        self.chooser = measured;
    }

    /// Writes the process state record; exactly once, before any pages.
    pub fn write_state(&mut self, st: &JobState) -> Result<(), ImageError> {
        self.check_usable()?;
        if self.state_written {
            return Err(ImageError::invalid_use("write_state called twice"));
        }
        let r = self.write_meta(Kind::State, st);
        self.state_written = r.is_ok();
        self.note(r)
    }

    /// Queues the pages at `addr` (page aligned; `data` a non-zero multiple of 4096 bytes).
    /// Data is copied, so `data` may be reused at once. Contiguous calls are merged into
    /// records of up to 1 MiB; records are written as their compression completes.
    pub fn write_pages(&mut self, addr: u64, data: &[u8]) -> Result<(), ImageError> {
        self.check_pages(addr, data.len())?;
        let r = self.queue_pages(addr, data);
        self.note(r)
    }

    /// Queues the `len` bytes of pages that `source` holds at `from`, to be recorded at
    /// `addr`: worker threads read them straight into their records, several chunks at a
    /// time, so the bytes are copied once. Records never span two calls.
    pub fn read_pages(
        &mut self,
        source: &Arc<dyn PageSource>,
        addr: u64,
        from: u64,
        len: usize,
    ) -> Result<(), ImageError> {
        self.check_pages(addr, len)?;
        let r = self.submit_current().and_then(|()| {
            let mut done = 0;
            while done < len {
                let most = match self.pool.is_inline() {
                    true => INLINE_CHUNK_BYTES,
                    false => CHUNK_BYTES,
                };
                let take = (len - done).min(most);
                let fill = Fill::Read {
                    source: Arc::clone(source),
                    from: from + done as u64,
                    len: take,
                };
                self.submit(addr + done as u64, fill, Vec::new())?;
                done += take;
            }
            Ok(())
        });
        self.note(r)
    }

    /// Records that the `len` bytes of pages at `addr` are those the pre-copy streams sent
    /// last for these addresses: a record with no page bytes.
    pub fn write_precopied(&mut self, addr: u64, len: usize) -> Result<(), ImageError> {
        self.check_pages(addr, len)?;
        let r = self.submit_current().and_then(|()| {
            let mut done = 0;
            // They carry no bytes: as many pages per record as a reader accepts (a quarter of
            // the records of 1 MiB chunks to name and check, in the freeze window).
            let most = MAX_RECORD_PAGES as usize * PAGE_SIZE;
            while done < len {
                let take = (len - done).min(most);
                self.submit(
                    addr + done as u64,
                    Fill::Precopied { len: take },
                    Vec::new(),
                )?;
                done += take;
            }
            Ok(())
        });
        self.note(r)
    }

    /// Writes the outstanding records and the End record, flushes and returns `out`.
    pub fn finish(mut self) -> Result<W, ImageError> {
        self.check_usable()?;
        if !self.state_written {
            return Err(ImageError::invalid_use("finish before write_state"));
        }
        self.submit_current()?;
        while self.write_one()? {}
        let end = self.tally.end_info().to_bytes();
        encode_record(Kind::End, &end, &mut self.meta)?;
        self.out.write_all(&self.meta)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Bytes handed to `out` so far (chunks still being worked on are not counted).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn check_usable(&self) -> Result<(), ImageError> {
        if self.failed {
            return Err(ImageError::invalid_use(
                "image writer used after an earlier error",
            ));
        }
        Ok(())
    }

    fn check_pages(&mut self, addr: u64, len: usize) -> Result<(), ImageError> {
        self.check_usable()?;
        if !self.state_written {
            return Err(ImageError::invalid_use("pages before write_state"));
        }
        if len == 0 || len & (PAGE_SIZE - 1) != 0 {
            return Err(ImageError::invalid_use(format!(
                "page data at {addr:#x} is {len} bytes, not a non-zero multiple of {PAGE_SIZE}"
            )));
        }
        if addr & (PAGE_SIZE as u64 - 1) != 0 || addr.checked_add(len as u64).is_none() {
            return Err(ImageError::invalid_use(format!(
                "page address {addr:#x} (+{len} bytes) is not page aligned or overflows"
            )));
        }
        Ok(())
    }

    fn note<T>(&mut self, r: Result<T, ImageError>) -> Result<T, ImageError> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn write_meta<T: Serialize>(&mut self, kind: Kind, value: &T) -> Result<(), ImageError> {
        let at = self.written;
        let crc =
            encode_meta(kind, value, &mut self.scratch, &mut self.meta).map_err(|e| match e {
                ImageError::TooLarge { kind, len, max, .. } => ImageError::TooLarge {
                    offset: at,
                    kind,
                    len,
                    max,
                },
                e => e,
            })?;
        self.out.write_all(&self.meta)?;
        self.written += self.meta.len() as u64;
        self.tally.add(crc, 0);
        Ok(())
    }

    fn queue_pages(&mut self, mut addr: u64, mut data: &[u8]) -> Result<(), ImageError> {
        while !data.is_empty() {
            let joins = self.cur.as_ref().is_some_and(|c| {
                c.addr + c.data.len() as u64 == addr && c.data.len() < CHUNK_BYTES
            });
            if !joins {
                self.submit_current()?;
                let buf = self
                    .free_chunks
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
                self.cur = Some(Chunk { addr, data: buf });
            }
            let Some(cur) = self.cur.as_mut() else { break };
            let take = (CHUNK_BYTES - cur.data.len()).min(data.len());
            let (now, later) = data.split_at(take);
            cur.data.extend_from_slice(now);
            data = later;
            addr += take as u64;
            if cur.data.len() == CHUNK_BYTES {
                self.submit_current()?;
            }
        }
        Ok(())
    }

    /// Sends the chunk being filled to a worker.
    fn submit_current(&mut self) -> Result<(), ImageError> {
        let Some(chunk) = self.cur.take() else {
            return Ok(());
        };
        self.submit(chunk.addr, Fill::Copied, chunk.data)
    }

    /// Hands one chunk to a worker, first writing finished records if the pool is full.
    fn submit(&mut self, addr: u64, fill: Fill, data: Vec<u8>) -> Result<(), ImageError> {
        while self.pool.is_full() {
            self.write_one()?;
        }
        let data = if data.capacity() == 0 {
            self.free_chunks.pop().unwrap_or_default()
        } else {
            data
        };
        let record = self.free_records.pop().unwrap_or_default();
        // A pre-copied record has no bytes to compress: it neither asks the chooser nor
        // counts as one of its probes.
        let (encode, bytes) = match &fill {
            Fill::Precopied { .. } => (Choice::Raw, 0),
            Fill::Copied => (self.chooser.next(data.len()), data.len()),
            Fill::Read { len, .. } => (self.chooser.next(*len), *len),
        };
        self.pool.submit(
            Job {
                addr,
                fill,
                encode,
                data,
                record,
            },
            bytes,
        )
    }

    /// Writes the oldest finished record; false when none is in flight.
    fn write_one(&mut self) -> Result<bool, ImageError> {
        let Some(done) = self.pool.recv()? else {
            return Ok(false);
        };
        let packed = done?;
        let bytes = packed.record.get(..packed.len).ok_or_else(|| {
            ImageError::Io(io::Error::other("page record longer than its buffer"))
        })?;
        let started = Instant::now();
        self.out.write_all(bytes)?;
        // A pre-copied record's ~20 bytes say nothing of the sink's speed.
        if packed.encoding != Encoding::Precopied {
            let compressed = packed.encoding == Encoding::Zstd;
            self.chooser.wrote(
                packed.len as u64,
                started.elapsed(),
                compressed,
                packed.sample,
            );
        }
        self.written += packed.len as u64;
        self.tally.add(packed.crc, packed.pages);
        let mut data = packed.data;
        data.clear();
        self.free_chunks.push(data);
        self.free_records.push(packed.record);
        Ok(true)
    }
}

/// A worker's zstd context (when the image may be compressed), reused for every chunk.
struct Encoder {
    zstd: Option<Compressor<'static>>,
    /// Where a probe's compressed slice goes (and is dropped).
    probe: Vec<u8>,
}

/// Where a job's page bytes are.
enum Fill {
    /// Already in the job's `data`.
    Copied,
    /// To be read from `source` at `from`.
    Read {
        source: Arc<dyn PageSource>,
        from: u64,
        len: usize,
    },
    /// None: sent by the pre-copy streams.
    Precopied { len: usize },
}

struct Job {
    /// The record's (tagged) page address.
    addr: u64,
    fill: Fill,
    encode: Choice,
    /// The page bytes (`Fill::Copied`), or a reusable buffer to read them into for zstd.
    data: Vec<u8>,
    /// Reused output buffer; grown once to hold the largest possible record.
    record: Vec<u8>,
}

/// A finished Pages record: `record[..len]` is the whole frame including its crc.
struct Packed {
    data: Vec<u8>,
    record: Vec<u8>,
    len: usize,
    crc: u32,
    pages: u64,
    encoding: Encoding,
    sample: Option<Sample>,
}

const PAGES_PREFIX: usize = FRAME_HEAD_LEN + PAGES_HEAD_LEN;

/// A compressed chunk is kept only when it saves at least this share of the raw bytes
/// (1/32): less is not worth its decompression at restore.
const WORTH_SAVING_SHIFT: u32 = 5;

impl Work for Encoder {
    type Job = Job;
    type Out = Result<Packed, ImageError>;

    fn run(&mut self, job: Job) -> Self::Out {
        let Job {
            addr,
            fill,
            encode,
            mut data,
            mut record,
        } = job;
        let len = match &fill {
            Fill::Copied => data.len(),
            Fill::Read { len, .. } | Fill::Precopied { len } => *len,
        };
        let zstd = match encode {
            Choice::Zstd => self.zstd.as_mut(),
            Choice::Raw | Choice::Probe => None,
        };
        // Room for this record only: a buffer is reused, and grows to the largest it held.
        let body_room = match zstd {
            Some(_) => zstd::zstd_safe::compress_bound(len).max(len),
            None => len,
        };
        let full = PAGES_PREFIX + body_room + CRC_LEN;
        if record.len() < full {
            record.resize(full, 0);
        }
        let (encoding, n, sample) = match zstd {
            _ if matches!(fill, Fill::Precopied { .. }) => (Encoding::Precopied, 0, None),
            None => {
                let body = record
                    .get_mut(PAGES_PREFIX..PAGES_PREFIX + len)
                    .ok_or_else(|| ImageError::invalid_use("page chunk larger than a record"))?;
                match &fill {
                    Fill::Copied => body.copy_from_slice(&data),
                    Fill::Read { source, from, .. } => read_from(source, *from, body)?,
                    Fill::Precopied { .. } => {}
                }
                let sample = match (encode, self.zstd.as_mut()) {
                    (Choice::Probe, Some(zstd)) => Some(probe(zstd, body, &mut self.probe)?),
                    _ => None,
                };
                (Encoding::Raw, len, sample)
            }
            Some(zstd) => {
                if let Fill::Read { source, from, .. } = &fill {
                    data.resize(len, 0);
                    read_from(source, *from, &mut data)?;
                }
                let started = Instant::now();
                let body = &mut record[PAGES_PREFIX..full - CRC_LEN];
                let packed = zstd.compress_to_buffer(&data, body)?;
                let sample = Sample {
                    raw: len as u64,
                    packed: packed as u64,
                    took: started.elapsed(),
                };
                if packed + (len >> WORTH_SAVING_SHIFT) <= len {
                    (Encoding::Zstd, packed, Some(sample))
                } else {
                    record[PAGES_PREFIX..PAGES_PREFIX + len].copy_from_slice(&data);
                    (Encoding::Raw, len, Some(sample))
                }
            }
        };
        let npages = len / PAGE_SIZE;
        let payload_len = u32::try_from(PAGES_HEAD_LEN + n)
            .map_err(|_| io::Error::other("page record too large"))?;
        let head = &mut record[..PAGES_PREFIX];
        head[0] = Kind::Pages as u8;
        head[1..5].copy_from_slice(&payload_len.to_le_bytes());
        head[5..13].copy_from_slice(&addr.to_le_bytes());
        head[13..17].copy_from_slice(&(npages as u32).to_le_bytes());
        head[17] = encoding as u8;
        let framed = PAGES_PREFIX + n;
        let crc = crc32fast::hash(&record[..framed]);
        record[framed..framed + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        Ok(Packed {
            data,
            record,
            len: framed + CRC_LEN,
            crc,
            pages: npages as u64,
            encoding,
            sample,
        })
    }
}

/// Compresses the first [`PROBE_SLICE`] of `body` aside, to measure.
fn probe(zstd: &mut Compressor<'static>, body: &[u8], out: &mut Vec<u8>) -> io::Result<Sample> {
    let slice = body.get(..PROBE_SLICE).unwrap_or(body);
    let room = zstd::zstd_safe::compress_bound(slice.len());
    if out.len() < room {
        out.resize(room, 0);
    }
    let started = Instant::now();
    let packed = zstd.compress_to_buffer(slice, out.as_mut_slice())?;
    Ok(Sample {
        raw: slice.len() as u64,
        packed: packed as u64,
        took: started.elapsed(),
    })
}

fn read_from(source: &Arc<dyn PageSource>, from: u64, buf: &mut [u8]) -> Result<(), ImageError> {
    source
        .read_pages(from, buf)
        .map_err(|source| ImageError::Source {
            addr: from,
            len: buf.len(),
            source,
        })
}
