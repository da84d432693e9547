//! The streaming image writer: frames the header and state records, batches page data into
//! 1 MiB chunks, compresses them on worker threads and writes the records in order.
//!
//! It owns no file and does no buffering beyond one record: every record reaches `out` as a
//! single `write_all`, so an unbuffered socket or file is fine.

use std::io::{self, Write};

use serde::Serialize;
use zstd::bulk::Compressor;

use super::error::ImageError;
use super::model::{Header, JobState};
use super::pool::{default_threads, Pool, Work};
use super::record::{
    encode_meta, encode_record, prelude, Kind, Tally, CHUNK_BYTES, CRC_LEN, FRAME_HEAD_LEN,
    PAGES_HEAD_LEN, PAGE_SIZE,
};

/// zstd level used by mrun unless told otherwise: fast enough to outrun the network.
pub const DEFAULT_LEVEL: i32 = 1;

/// Chunks queued per compression worker: one being compressed, one waiting.
const JOBS_PER_THREAD: usize = 2;

/// Writes one image to `out`: [`ImageWriter::new`] (header), [`ImageWriter::write_state`]
/// once, [`ImageWriter::write_pages`] any number of times, then [`ImageWriter::finish`].
/// After an error the writer refuses further calls; the partial image must be discarded.
pub struct ImageWriter<W: Write> {
    out: W,
    pool: Pool<Compress>,
    tally: Tally,
    /// The chunk being filled; contiguous `write_pages` calls share a record.
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
    /// Starts an image: writes the magic, the format version and the header record.
    /// Compresses with zstd `level` on one worker thread per core (at most 4).
    pub fn new(out: W, header: &Header, level: i32) -> Result<Self, ImageError> {
        Self::with_threads(out, header, level, default_threads())
    }

    /// As [`ImageWriter::new`] with `threads` compression workers; 0 compresses on the
    /// caller's thread.
    pub fn with_threads(
        out: W,
        header: &Header,
        level: i32,
        threads: usize,
    ) -> Result<Self, ImageError> {
        let pool = Pool::new(threads, JOBS_PER_THREAD, "mrun-zstd", || {
            Ok(Compress {
                zstd: Compressor::new(level)?,
            })
        })?;
        let mut w = ImageWriter {
            out,
            pool,
            tally: Tally::default(),
            cur: None,
            free_chunks: Vec::new(),
            free_records: Vec::new(),
            meta: Vec::new(),
            scratch: Vec::new(),
            written: 0,
            state_written: false,
            failed: false,
        };
        let p = prelude();
        w.out.write_all(&p)?;
        w.written = p.len() as u64;
        w.write_meta(Kind::Header, header)?;
        Ok(w)
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
        self.check_usable()?;
        if !self.state_written {
            return Err(ImageError::invalid_use("write_pages before write_state"));
        }
        if data.is_empty() || data.len() & (PAGE_SIZE - 1) != 0 {
            return Err(ImageError::invalid_use(format!(
                "page data at {addr:#x} is {} bytes, not a non-zero multiple of {PAGE_SIZE}",
                data.len()
            )));
        }
        if addr & (PAGE_SIZE as u64 - 1) != 0 || addr.checked_add(data.len() as u64).is_none() {
            return Err(ImageError::invalid_use(format!(
                "page address {addr:#x} (+{} bytes) is not page aligned or overflows",
                data.len()
            )));
        }
        let r = self.queue_pages(addr, data);
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

    /// Bytes handed to `out` so far (chunks still being compressed are not counted).
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

    /// Sends the chunk being filled to a worker, first writing finished records if the pool
    /// is full.
    fn submit_current(&mut self) -> Result<(), ImageError> {
        let Some(chunk) = self.cur.take() else {
            return Ok(());
        };
        while self.pool.is_full() {
            self.write_one()?;
        }
        let record = self.free_records.pop().unwrap_or_default();
        self.pool.submit(Job {
            addr: chunk.addr,
            data: chunk.data,
            record,
        })
    }

    /// Writes the oldest compressed record; false when none is in flight.
    fn write_one(&mut self) -> Result<bool, ImageError> {
        let Some(done) = self.pool.recv()? else {
            return Ok(false);
        };
        let packed = done?;
        let bytes = packed.record.get(..packed.len).ok_or_else(|| {
            ImageError::Io(io::Error::other("compressed record longer than its buffer"))
        })?;
        self.out.write_all(bytes)?;
        self.written += packed.len as u64;
        self.tally.add(packed.crc, packed.pages);
        let mut data = packed.data;
        data.clear();
        self.free_chunks.push(data);
        self.free_records.push(packed.record);
        Ok(true)
    }
}

/// A compression worker's zstd context, reused for every chunk.
struct Compress {
    zstd: Compressor<'static>,
}

struct Job {
    addr: u64,
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
}

const PAGES_PREFIX: usize = FRAME_HEAD_LEN + PAGES_HEAD_LEN;

impl Work for Compress {
    type Job = Job;
    type Out = Result<Packed, ImageError>;

    fn run(&mut self, job: Job) -> Self::Out {
        let Job {
            addr,
            data,
            mut record,
        } = job;
        let full = PAGES_PREFIX + zstd::zstd_safe::compress_bound(CHUNK_BYTES) + CRC_LEN;
        if record.len() < full {
            record.resize(full, 0);
        }
        let npages = data.len() / PAGE_SIZE;
        let (head, body) = record.split_at_mut(PAGES_PREFIX);
        let limit = body.len() - CRC_LEN;
        let n = self.zstd.compress_to_buffer(&data, &mut body[..limit])?;
        let payload_len = u32::try_from(PAGES_HEAD_LEN + n)
            .map_err(|_| io::Error::other("compressed chunk too large"))?;
        head[0] = Kind::Pages as u8;
        head[1..5].copy_from_slice(&payload_len.to_le_bytes());
        head[5..13].copy_from_slice(&addr.to_le_bytes());
        head[13..17].copy_from_slice(&(npages as u32).to_le_bytes());
        let framed = PAGES_PREFIX + n;
        let crc = crc32fast::hash(&record[..framed]);
        record[framed..framed + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        Ok(Packed {
            data,
            record,
            len: framed + CRC_LEN,
            crc,
            pages: npages as u64,
        })
    }
}
