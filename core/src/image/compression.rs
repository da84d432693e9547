//! Whether a chunk of pages is worth compressing. Compression pays when the sink is slower
//! than the workers can compress and the pages shrink: over a network link, text-like memory
//! goes several times faster compressed; into a file in memory, or for random bytes, it only
//! costs time, at checkpoint and again at restore.
//!
//! `Auto` decides from what it measures as the image is written: the sink's speed (bytes per
//! second spent in its writes), and the compressors' speed and ratio on recent chunks. A few
//! chunks are compressed at the start; while it writes raw, one chunk in [`PROBE_EVERY`] is
//! probed (a [`PROBE_SLICE`] of it compressed to measure, the record written raw) to keep the
//! ratio and speed known. `AutoLocal` (an image written to a local file, which the page cache
//! takes faster than zstd compresses) starts raw and probes its first chunks instead.

use std::time::Duration;

/// How the writer compresses page records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Every record raw.
    Off,
    /// Every record compressed at this zstd level (kept raw when it would not shrink).
    Zstd(i32),
    /// Compressed at this zstd level when measuring says it makes the image go faster, and
    /// until it has measured (a link, a pipe).
    Auto(i32),
    /// As `Auto`, but raw until measuring says compressing pays: for an image written to a
    /// local file, which the page cache takes faster than zstd compresses.
    AutoLocal(i32),
}

impl Compression {
    /// The zstd level the workers need a context for, if any.
    pub(crate) fn level(self) -> Option<i32> {
        match self {
            Compression::Off => None,
            Compression::Zstd(l) | Compression::Auto(l) | Compression::AutoLocal(l) => Some(l),
        }
    }
}

/// What a worker does with one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    Raw,
    Zstd,
    /// Raw, with a [`PROBE_SLICE`] of it compressed aside to measure.
    Probe,
}

/// Bytes of a chunk a probe compresses. Chunks smaller than this neither probe nor count as
/// a measurement (a few pages say little of a compressor's speed).
pub(crate) const PROBE_SLICE: usize = 64 << 10;

/// One compressed chunk: its size before and after, and the time it took.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub raw: u64,
    pub packed: u64,
    pub took: Duration,
}

/// Chunks measured at the start before `Auto` trusts its measurements.
const FIRST_PROBES: u64 = 2;
/// While writing raw, one chunk in this many is probed to keep the measurements fresh.
const PROBE_EVERY: u64 = 16;
/// Weight of the newest measurement in the compressors' running averages.
const NEWEST: f64 = 0.25;
/// Weight of the newest write in the sink's running sums: the sink's speed is bytes over
/// time across about this many records' inverse, so that writes absorbed by a buffer and the
/// writes that flush it average out.
const NEWEST_WRITE: f64 = 1.0 / 16.0;
/// Compression must promise this much more speed to be chosen (a margin against noise).
const MARGIN: f64 = 1.1;

/// What a writer learned of its sink and its compressors, handed from one image to the next
/// on the same sink ([`super::ImageWriter::measured`], [`super::ImageWriter::carry_on`]): the
/// frozen image after pre-copy rounds starts from what the rounds measured, not from probes.
#[derive(Debug, Clone)]
pub struct Chooser {
    mode: Compression,
    workers: f64,
    chunks: u64,
    raw_records: u64,
    zstd_records: u64,
    /// Sink bytes and seconds of write time, decaying sums.
    sink_bytes: f64,
    sink_secs: f64,
    /// Raw bytes one worker compresses per second, a running average.
    zstd_rate: Option<f64>,
    /// Raw bytes per compressed byte, a running average.
    ratio: Option<f64>,
    samples: u64,
}

impl Chooser {
    pub(crate) fn new(mode: Compression, workers: usize) -> Self {
        Chooser {
            mode,
            workers: workers as f64,
            chunks: 0,
            raw_records: 0,
            zstd_records: 0,
            sink_bytes: 0.0,
            sink_secs: 0.0,
            zstd_rate: None,
            ratio: None,
            samples: 0,
        }
    }

    /// What to do with the next chunk, of `bytes`.
    pub(crate) fn next(&mut self, bytes: usize) -> Choice {
        let measurable = bytes >= PROBE_SLICE;
        let local = match self.mode {
            Compression::Off => return Choice::Raw,
            Compression::Zstd(_) => return Choice::Zstd,
            Compression::Auto(_) => false,
            Compression::AutoLocal(_) => true,
        };
        if measurable {
            self.chunks += 1;
        }
        if self.samples < FIRST_PROBES {
            return match (local, measurable) {
                (false, _) => Choice::Zstd,
                (true, true) => Choice::Probe,
                (true, false) => Choice::Raw,
            };
        }
        if self.compression_pays() {
            Choice::Zstd
        } else if measurable && self.chunks % PROBE_EVERY == 0 {
            Choice::Probe
        } else {
            Choice::Raw
        }
    }

    /// Whether compressing makes the image go faster, from the measurements so far: raw, the
    /// sink takes `sink` memory bytes a second; compressed, `min(workers * zstd, sink *
    /// ratio)`.
    fn compression_pays(&self) -> bool {
        let (Some(zstd), Some(ratio)) = (self.zstd_rate, self.ratio) else {
            return true;
        };
        if self.sink_secs <= 0.0 {
            return true;
        }
        let sink = self.sink_bytes / self.sink_secs;
        (self.workers * zstd).min(sink * ratio) > sink * MARGIN
    }

    /// A record of `bytes` went to the sink in `took`, compressed or not; `sample` if its
    /// chunk went through the compressor (and may have been kept raw all the same).
    pub(crate) fn wrote(
        &mut self,
        bytes: u64,
        took: Duration,
        compressed: bool,
        sample: Option<Sample>,
    ) {
        self.sink_bytes += NEWEST_WRITE * (bytes as f64 - self.sink_bytes);
        self.sink_secs += NEWEST_WRITE * (took.as_secs_f64() - self.sink_secs);
        if let Some(s) = sample.filter(|s| s.raw >= PROBE_SLICE as u64) {
            self.samples += 1;
            average(
                &mut self.zstd_rate,
                s.raw as f64 / s.took.as_secs_f64().max(1e-7),
            );
            average(&mut self.ratio, s.raw as f64 / (s.packed.max(1)) as f64);
        }
        if compressed {
            self.zstd_records += 1;
        } else {
            self.raw_records += 1;
        }
    }

    /// Page records written `(raw, compressed)`.
    #[cfg(test)]
    pub(crate) fn records(&self) -> (u64, u64) {
        (self.raw_records, self.zstd_records)
    }
}

fn average(avg: &mut Option<f64>, x: f64) {
    *avg = Some(match *avg {
        None => x,
        Some(a) => a + NEWEST * (x - a),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(raw: u64, packed: u64, ms: u64) -> Option<Sample> {
        Some(Sample {
            raw,
            packed,
            took: Duration::from_millis(ms),
        })
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn off_and_zstd_are_what_they_say() {
        let mut off = Chooser::new(Compression::Off, 2);
        let mut on = Chooser::new(Compression::Zstd(1), 2);
        for _ in 0..40 {
            assert_eq!(off.next(MIB as usize), Choice::Raw);
            assert_eq!(on.next(MIB as usize), Choice::Zstd);
        }
    }

    #[test]
    fn a_slow_link_and_text_compress() {
        // 100 MB/s sink, 400 MB/s per worker, 3.4x smaller.
        let mut c = Chooser::new(Compression::Auto(1), 2);
        for _ in 0..64 {
            let choice = c.next(MIB as usize);
            assert_eq!(choice, Choice::Zstd);
            c.wrote(
                MIB * 10 / 34,
                Duration::from_micros(3000),
                true,
                sample(MIB, MIB * 10 / 34, 2),
            );
        }
        assert_eq!(c.records(), (0, 64));
    }

    #[test]
    fn a_fast_sink_goes_raw_but_keeps_probing() {
        // 4 GB/s sink: 1 MiB in 250 us; compression 400 MB/s per worker.
        let mut c = Chooser::new(Compression::Auto(1), 2);
        let (mut zstd, mut probes) = (0, 0);
        for _ in 0..64 {
            match c.next(MIB as usize) {
                Choice::Zstd => {
                    zstd += 1;
                    c.wrote(
                        MIB / 3,
                        Duration::from_micros(80),
                        true,
                        sample(MIB, MIB / 3, 2),
                    );
                }
                Choice::Raw => c.wrote(MIB, Duration::from_micros(250), false, None),
                Choice::Probe => {
                    probes += 1;
                    c.wrote(
                        MIB,
                        Duration::from_micros(250),
                        false,
                        sample(PROBE_SLICE as u64, PROBE_SLICE as u64 / 3, 1),
                    )
                }
            }
        }
        assert_eq!(zstd, FIRST_PROBES);
        assert!((64 / PROBE_EVERY - 1..=64 / PROBE_EVERY).contains(&probes));
    }

    #[test]
    fn random_pages_on_a_slow_link_go_raw() {
        // Nothing shrinks: compressing cannot beat the sink.
        let mut c = Chooser::new(Compression::Auto(1), 2);
        let mut raw = 0;
        for _ in 0..64 {
            match c.next(MIB as usize) {
                Choice::Zstd => c.wrote(
                    MIB,
                    Duration::from_millis(10),
                    false,
                    sample(MIB, MIB + 64, 1),
                ),
                Choice::Raw | Choice::Probe => {
                    raw += 1;
                    c.wrote(
                        MIB,
                        Duration::from_millis(10),
                        false,
                        sample(PROBE_SLICE as u64, PROBE_SLICE as u64 + 16, 1),
                    )
                }
            }
        }
        assert_eq!(raw, 64 - FIRST_PROBES);
    }

    #[test]
    fn a_local_file_starts_raw_and_stays_raw_when_it_is_fast() {
        // 4 GB/s sink, text-like pages: the probes measure, no record is compressed.
        let mut c = Chooser::new(Compression::AutoLocal(1), 2);
        let mut probes = 0;
        for _ in 0..64 {
            match c.next(MIB as usize) {
                Choice::Zstd => panic!("a fast local file got a compressed record"),
                Choice::Raw => c.wrote(MIB, Duration::from_micros(250), false, None),
                Choice::Probe => {
                    probes += 1;
                    c.wrote(
                        MIB,
                        Duration::from_micros(250),
                        false,
                        sample(PROBE_SLICE as u64, PROBE_SLICE as u64 / 3, 1),
                    )
                }
            }
        }
        assert!(probes <= FIRST_PROBES + 64 / PROBE_EVERY, "{probes} probes");
    }

    #[test]
    fn a_slow_local_file_and_text_compress_after_the_probes() {
        // 100 MB/s sink (a disk past the page cache), 400 MB/s per worker, 3.4x smaller.
        let mut c = Chooser::new(Compression::AutoLocal(1), 2);
        let mut choices = Vec::new();
        for _ in 0..16 {
            let choice = c.next(MIB as usize);
            choices.push(choice);
            let (len, sample) = match choice {
                Choice::Zstd => (MIB * 10 / 34, sample(MIB, MIB * 10 / 34, 2)),
                _ => (
                    MIB,
                    sample(PROBE_SLICE as u64, PROBE_SLICE as u64 * 10 / 34, 1),
                ),
            };
            c.wrote(
                len,
                Duration::from_micros(len * 10 / MIB * 1000),
                false,
                sample,
            );
        }
        assert_eq!(choices[..2], [Choice::Probe, Choice::Probe]);
        assert!(
            choices[2..].iter().all(|c| *c == Choice::Zstd),
            "{choices:?}"
        );
    }

    #[test]
    fn chunks_of_a_few_pages_are_not_measurements() {
        // An image that starts with small areas: their chunks neither probe nor count.
        let mut c = Chooser::new(Compression::AutoLocal(1), 2);
        for _ in 0..8 {
            assert_eq!(c.next(8 << 10), Choice::Raw);
            c.wrote(
                8 << 10,
                Duration::from_micros(2),
                false,
                sample(8 << 10, 1 << 10, 0),
            );
        }
        assert_eq!(c.next(MIB as usize), Choice::Probe);
        let mut auto = Chooser::new(Compression::Auto(1), 2);
        for _ in 0..8 {
            assert_eq!(auto.next(8 << 10), Choice::Zstd);
            auto.wrote(
                1 << 10,
                Duration::from_micros(2),
                true,
                sample(8 << 10, 1 << 10, 0),
            );
        }
        assert_eq!(auto.next(MIB as usize), Choice::Zstd);
    }
}
