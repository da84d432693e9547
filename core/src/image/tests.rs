//! Round trips and hostile-input tests for the image writer and reader.

use super::model::*;
use super::record::{encode_record, Kind, CHUNK_BYTES, PRELUDE_LEN};
use super::*;

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

fn header() -> Header {
    Header {
        compat: Compat {
            arch: "x86_64".into(),
            xfeatures: 0x2e7,
            xstate_size: 2696,
            kernel_release: "6.18.0".into(),
            special_layout: vec![("[vvar]".into(), 16384), ("[vdso]".into(), 8192)],
            vdso: (0..=255u8).collect(),
        },
        pid: 4242,
        comm: "victim".into(),
        created_unix: 1_700_000_000,
        writer: "mrun 0.1.0".into(),
        boot_id: "test-boot".into(),
    }
}

fn state() -> JobState {
    let id = FileIdentity {
        dev: 2049,
        ino: 77,
        size: 1234,
        mtime_ns: -5,
    };
    let process = ProcessState {
        pid: 4242,
        ppid: 0,
        pgid: 0,
        sid: 0,
        exe: "/usr/bin/victim".into(),
        exe_identity: id.clone(),
        threads: vec![ThreadState {
            tid: 4242,
            regs: GpRegs([7; 27]),
            xstate: vec![0xab; 64],
            sigmask: 1 << 9,
            queued_signals: Vec::new(),
            pending_signals: vec![10],
            altstack: AltStack {
                sp: 0,
                flags: 2,
                size: 0,
            },
            rseq: Some(Rseq {
                addr: 0x7000,
                len: 32,
                sig: 0x53053053,
                flags: 0,
            }),
            robust_list: (0x7100, 24),
            clear_child_tid: 0x7200,
            name: "victim".into(),
            affinity: None,
            attrs: ThreadAttrs::default(),
        }],
        sigactions: vec![SigAction {
            signo: 2,
            handler: 0x401000,
            flags: 4,
            restorer: 0x402000,
            mask: 0,
        }],
        personality: 0,
        mm: MmFields {
            start_code: 0x400000,
            auxv: vec![6, 4096, 0, 0],
            ..MmFields::default()
        },
        cwd: "/tmp".into(),
        umask: 0o22,
        rlimits: vec![Rlimit {
            resource: 7,
            soft: 1024,
            hard: 4096,
        }],
        vmas: vec![Vma {
            start: 0x400000,
            end: 0x401000,
            prot: 5,
            shared: false,
            grows_down: false,
            backing: Backing::File {
                path: "/usr/bin/victim".into(),
                offset: 0,
                identity: id,
            },
            advice: 0,
            guards: Vec::new(),
        }],
        fds: vec![Fd {
            fd: 1,
            cloexec: false,
            file: 0,
        }],
        queued_signals: Vec::new(),
        attrs: ProcessAttrs::default(),
        itimers: vec![IntervalTimer {
            which: 0,
            value_us: 1_500_000,
            interval_us: 500_000,
        }],
        posix_timers: vec![PosixTimer {
            id: 3,
            clock: 0,
            notify: 4,
            signo: 34,
            value: 0xfeed,
            tid: 4243,
            value_ns: 2_000_000_000,
            interval_ns: 0,
            deadline_ns: Some(1_700_000_002_000_000_000),
            overrun: 1,
            signal_queued: false,
        }],
    };
    JobState {
        processes: vec![process],
        files: vec![FdKind::Stdio { slot: 1 }],
        shared: Vec::new(),
        zombies: Vec::new(),
        leaderless_groups: Vec::new(),
    }
}

/// Page data: random, or compressible (a few repeated words and zero runs).
fn pages(rng: &mut Rng, npages: usize, random: bool) -> Vec<u8> {
    let mut v = vec![0u8; npages * PAGE_SIZE];
    if random {
        rng.fill(&mut v);
    } else {
        for (i, chunk) in v.chunks_mut(8).enumerate() {
            if i % 3 != 0 {
                chunk.copy_from_slice(&((i as u64 / 64) ^ 0xdead).to_le_bytes());
            }
        }
    }
    v
}

/// Flattens writes into (page address, page bytes) in order, for comparing with what is read.
fn flatten(writes: &[(u64, Vec<u8>)]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for (addr, data) in writes {
        for (i, page) in data.chunks(PAGE_SIZE).enumerate() {
            out.push((addr + (i * PAGE_SIZE) as u64, page.to_vec()));
        }
    }
    out
}

fn write_image(writes: &[(u64, Vec<u8>)], threads: usize) -> Vec<u8> {
    write_image_as(writes, threads, Compression::Zstd(DEFAULT_LEVEL))
}

fn write_image_as(writes: &[(u64, Vec<u8>)], threads: usize, how: Compression) -> Vec<u8> {
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), how, threads).unwrap();
    w.write_state(&state()).unwrap();
    for (addr, data) in writes {
        w.write_pages(*addr, data).unwrap();
    }
    w.finish().unwrap()
}

/// Reads a whole image; returns the pages read, or the first error.
fn read_image(bytes: &[u8], threads: usize) -> Result<Vec<(u64, Vec<u8>)>, ImageError> {
    let (mut r, h) = ImageReader::open_with_threads(bytes, threads)?;
    assert_eq!(h.compat, header().compat);
    let st = r.read_state()?;
    assert_eq!(format!("{st:?}"), format!("{:?}", state()));
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Some(addr) = r.next_pages(&mut buf)? {
        assert_eq!(buf.len() % PAGE_SIZE, 0);
        got.extend(flatten(&[(addr, buf.clone())]));
    }
    Ok(got)
}

/// Reads a whole image through `for_each_pages`; returns the pages in address order.
fn read_image_to_sink(bytes: &[u8], threads: usize) -> Result<Vec<(u64, Vec<u8>)>, ImageError> {
    let (mut r, _) = ImageReader::open_with_threads(bytes, threads)?;
    r.read_state()?;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = std::sync::Arc::clone(&got);
    let pages = r.for_each_pages(std::sync::Arc::new(move |addr, data: &[u8]| {
        into.lock()
            .unwrap()
            .extend(flatten(&[(addr, data.to_vec())]));
        Ok(())
    }))?;
    let mut got = std::mem::take(&mut *got.lock().unwrap());
    assert_eq!(pages as usize, got.len());
    got.sort_by_key(|(a, _)| *a);
    Ok(got)
}

/// Pages held in memory, for `read_pages`.
struct Held(Vec<u8>);

impl PageSource for Held {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let at = addr as usize;
        match self.0.get(at..at + buf.len()) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::Error::from_raw_os_error(libc::EFAULT)),
        }
    }
}

#[test]
fn pages_read_by_the_workers_round_trip() {
    let mut rng = Rng(99);
    let mut memory = pages(&mut rng, 300, false);
    memory.extend(pages(&mut rng, 300, true));
    let source: std::sync::Arc<dyn PageSource> = std::sync::Arc::new(Held(memory.clone()));
    let runs = [(0usize, 1usize), (3, 290), (295, 5), (300, 300)];
    let mut expected = Vec::new();
    for &(first, n) in &runs {
        let at = first * PAGE_SIZE;
        expected.push((
            0x4000_0000 + at as u64,
            memory[at..at + n * PAGE_SIZE].to_vec(),
        ));
    }
    let expected = flatten(&expected);
    for how in [Compression::Off, Compression::Zstd(1), Compression::Auto(1)] {
        for threads in [0, 2] {
            let mut w = ImageWriter::with_threads(Vec::new(), &header(), how, threads).unwrap();
            w.write_state(&state()).unwrap();
            for &(first, n) in &runs {
                let at = (first * PAGE_SIZE) as u64;
                w.read_pages(&source, 0x4000_0000 + at, at, n * PAGE_SIZE)
                    .unwrap();
            }
            let img = w.finish().unwrap();
            let encodings: Vec<u8> = records(&img)
                .into_iter()
                .filter(|r| img[r.start] == Kind::Pages as u8)
                .map(|r| img[r.start + 17])
                .collect();
            let raw = encodings.iter().filter(|&&e| e == 0).count();
            let packed = encodings.iter().filter(|&&e| e == 1).count();
            match how {
                Compression::Off => assert_eq!(packed, 0),
                // The random half stays raw: compressing it would not pay.
                Compression::Zstd(_) => assert!(raw > 0 && packed > 0, "{raw} {packed}"),
                _ => {}
            }
            assert_eq!(read_image(&img, 2).unwrap(), expected, "{how:?} {threads}");
        }
    }
    // A source that fails fails the writer, naming the address.
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Off, 2).unwrap();
    w.write_state(&state()).unwrap();
    let r = w
        .read_pages(&source, 0x1000, 599 * PAGE_SIZE as u64, 2 * PAGE_SIZE)
        .and_then(|()| w.finish().map(|_| ()));
    match r {
        Err(e @ ImageError::Source { addr, .. }) => {
            assert_eq!(addr, 599 * PAGE_SIZE as u64, "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// Two pre-copy rounds and an image naming some of their pages, read as the restore does.
#[test]
fn precopy_streams_then_an_image_that_names_their_pages() {
    let mut rng = Rng(11);
    let old = pages(&mut rng, 40, false);
    let newer = pages(&mut rng, 10, true);
    let last = pages(&mut rng, 4, true);
    let held: std::sync::Arc<dyn PageSource> = std::sync::Arc::new(Held(old.clone()));
    let again: std::sync::Arc<dyn PageSource> = std::sync::Arc::new(Held(newer.clone()));
    let base = 0x7000_0000u64;
    let p = PAGE_SIZE as u64;
    let mut input = Vec::new();
    // Round 1: pages 0..40; round 2: pages 10..20 again, changed.
    let mut w = ImageWriter::precopy(&mut input, Compression::Auto(1)).unwrap();
    w.read_pages(&held, base, 0, 40 * PAGE_SIZE).unwrap();
    w.finish().unwrap();
    let mut w = ImageWriter::precopy(&mut input, Compression::Zstd(1)).unwrap();
    w.read_pages(&again, base + 10 * p, 0, 10 * PAGE_SIZE)
        .unwrap();
    w.finish().unwrap();
    // The image: pages 0..36 named, 36..40 carried (written at the end).
    let mut w = ImageWriter::with_threads(&mut input, &header(), Compression::Off, 2).unwrap();
    w.write_state(&state()).unwrap();
    w.write_precopied(base, 36 * PAGE_SIZE).unwrap();
    w.write_pages(base + 36 * p, &last).unwrap();
    w.finish().unwrap();
    input.extend_from_slice(b"after");
    let mut want = old.clone();
    want[10 * PAGE_SIZE..20 * PAGE_SIZE].copy_from_slice(&newer);
    want[36 * PAGE_SIZE..].copy_from_slice(&last);
    let want = flatten(&[(base, want)]);

    let (store, rest) = precopy::read_leading(&input[..]).unwrap();
    assert_eq!(store.pages(), 40);
    let store = std::sync::Arc::new(store);
    // Through next_pages.
    let (mut r, _) = ImageReader::open(rest).unwrap();
    r.set_precopied(std::sync::Arc::clone(&store));
    r.read_state().unwrap();
    let mut buf = Vec::new();
    let mut got = Vec::new();
    while let Some(addr) = r.next_pages(&mut buf).unwrap() {
        got.extend(flatten(&[(addr, buf.clone())]));
    }
    got.sort_by_key(|(a, _)| *a);
    assert_eq!(got, want);
    let mut after = Vec::new();
    std::io::Read::read_to_end(&mut r.into_inner(), &mut after).unwrap();
    assert_eq!(after, b"after");
    // Through a sink, on workers.
    let (_, rest) = precopy::read_leading(&input[..]).unwrap();
    let (mut r, _) = ImageReader::open(rest).unwrap();
    r.set_precopied(store);
    r.read_state().unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = std::sync::Arc::clone(&got);
    let n = r
        .for_each_pages(std::sync::Arc::new(move |addr, data: &[u8]| {
            into.lock()
                .unwrap()
                .extend(flatten(&[(addr, data.to_vec())]));
            Ok(())
        }))
        .unwrap();
    assert_eq!(n, 40);
    let mut got = std::mem::take(&mut *got.lock().unwrap());
    got.sort_by_key(|(a, _)| *a);
    assert_eq!(got, want);
}

/// An image naming pages no stream sent is corrupt, not restored with holes.
#[test]
fn a_page_named_but_never_sent_is_corrupt() {
    let mut img = Vec::new();
    let mut w = ImageWriter::with_threads(&mut img, &header(), Compression::Off, 0).unwrap();
    w.write_state(&state()).unwrap();
    w.write_precopied(0x1000, PAGE_SIZE).unwrap();
    w.finish().unwrap();
    for threads in [0, 2] {
        let (store, rest) = precopy::read_leading(&img[..]).unwrap();
        let (mut r, _) = ImageReader::open_with_threads(rest, threads).unwrap();
        r.set_precopied(std::sync::Arc::new(store));
        r.read_state().unwrap();
        let mut buf = Vec::new();
        match r.next_pages(&mut buf) {
            Err(ImageError::Corrupt { what, .. }) => assert!(what.contains("pre-copy"), "{what}"),
            other => panic!("{other:?}"),
        }
    }
}

/// A pre-copied record that carries bytes is corrupt, read one record at a time or through
/// a sink (the restore's way), with the pages it names in the store.
#[test]
fn a_precopied_record_holding_bytes_is_corrupt() {
    let page: std::sync::Arc<dyn PageSource> = std::sync::Arc::new(Held(vec![7u8; PAGE_SIZE]));
    let mut stream = Vec::new();
    let mut w = ImageWriter::precopy(&mut stream, Compression::Off).expect("stream");
    w.read_pages(&page, 0x1000, 0, PAGE_SIZE).expect("read");
    w.finish().expect("stream end");
    let mut img = Vec::new();
    let mut w = ImageWriter::with_threads(&mut img, &header(), Compression::Off, 0).expect("image");
    w.write_state(&state()).expect("state");
    w.write_precopied(0x1000, PAGE_SIZE).expect("precopied");
    w.finish().expect("image end");
    // The Precopied record, with a page of bytes after its head.
    let named = records(&img)[2].clone();
    let mut payload = img[named.start + 5..named.end - 4].to_vec();
    payload.extend_from_slice(&[0x55; PAGE_SIZE]);
    let mut rec = Vec::new();
    encode_record(Kind::Pages, &payload, &mut rec).expect("record");
    let mut input = stream;
    input.extend_from_slice(&img[..named.start]);
    input.extend_from_slice(&rec);
    input.extend_from_slice(&img[named.end..]);
    for threads in [0, 2] {
        let open = || {
            let (store, rest) = precopy::read_leading(&input[..]).expect("streams");
            let (mut r, _) = ImageReader::open_with_threads(rest, threads).expect("open");
            r.set_precopied(std::sync::Arc::new(store));
            r.read_state().expect("state");
            r
        };
        let one_by_one = open().next_pages(&mut Vec::new()).map(|_| ());
        let sink = open()
            .for_each_pages(std::sync::Arc::new(|_, _: &[u8]| Ok(())))
            .map(|_| ());
        for got in [one_by_one, sink] {
            match got {
                Err(ImageError::Corrupt { what, .. }) => assert!(what.contains("holds bytes")),
                other => panic!("{threads} threads: {other:?}"),
            }
        }
    }
}

#[test]
fn a_failing_sink_stops_the_reading() {
    let img = write_image(&small_writes(), 0);
    for threads in [0, 2] {
        let (mut r, _) = ImageReader::open_with_threads(&img[..], threads).unwrap();
        r.read_state().unwrap();
        let e = r
            .for_each_pages(std::sync::Arc::new(|_, _: &[u8]| {
                Err(std::io::Error::from_raw_os_error(libc::EFAULT))
            }))
            .unwrap_err();
        assert!(matches!(e, ImageError::Sink { .. }), "{e:?}");
    }
}

/// A small image: a few page records, one of them random.
fn small_writes() -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng(7);
    vec![
        (0x10000, pages(&mut rng, 2, false)),
        (0x20000, pages(&mut rng, 1, true)),
        (0x7fff0000, pages(&mut rng, 1, false)),
    ]
}

/// Byte ranges of the records after the prelude.
fn records(img: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = PRELUDE_LEN;
    while at < img.len() {
        let len = u32::from_le_bytes(img[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push(at..at + 5 + len + 4);
        at += 5 + len + 4;
    }
    out
}

fn splice(img: &[u8], order: &[usize]) -> Vec<u8> {
    let recs = records(img);
    let mut out = img[..PRELUDE_LEN].to_vec();
    for &i in order {
        out.extend_from_slice(&img[recs[i].clone()]);
    }
    out
}

fn is_image_error(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::Corrupt { .. }
            | ImageError::NotAnImage
            | ImageError::Version { .. }
            | ImageError::Truncated { .. }
            | ImageError::TooLarge { .. }
            | ImageError::Unexpected { .. }
    )
}

#[test]
fn round_trip_many_records() {
    let mut rng = Rng(0x1234_5678);
    let mut writes = Vec::new();
    let mut addr = 0x5555_0000_0000u64;
    for i in 0..40 {
        let n = 1 + rng.below(if i % 7 == 0 { 700 } else { 40 }) as usize;
        writes.push((addr, pages(&mut rng, n, i % 2 == 0)));
        // Mostly contiguous (merged into shared records), sometimes a gap.
        addr += (n * PAGE_SIZE) as u64 + if rng.below(3) == 0 { 0x10000 } else { 0 };
    }
    let expected = flatten(&writes);
    let ways = [
        Compression::Zstd(DEFAULT_LEVEL),
        Compression::Off,
        Compression::Auto(DEFAULT_LEVEL),
    ];
    for how in ways {
        for wt in [0, 1, 2] {
            let img = write_image_as(&writes, wt, how);
            for rt in [0, 2] {
                assert_eq!(
                    read_image(&img, rt).unwrap(),
                    expected,
                    "{how:?}: writer {wt} reader {rt} threads"
                );
                assert_eq!(
                    read_image_to_sink(&img, rt).unwrap(),
                    expected,
                    "{how:?} into a sink: writer {wt} reader {rt} threads"
                );
            }
        }
    }
    // Records hold at most 1 MiB.
    let img = write_image(&writes, 2);
    for r in records(&img) {
        if img[r.start] == Kind::Pages as u8 {
            let np = u32::from_le_bytes(img[r.start + 13..r.start + 17].try_into().unwrap());
            assert!(np as usize * PAGE_SIZE <= CHUNK_BYTES);
        }
    }
}

#[test]
fn empty_image_and_trailing_data() {
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(3), 2).unwrap();
    w.write_state(&state()).unwrap();
    let mut img = w.finish().unwrap();
    img.extend_from_slice(b"after");
    let (mut r, _) = ImageReader::open(&img[..]).unwrap();
    r.read_state().unwrap();
    let mut buf = Vec::new();
    assert_eq!(r.next_pages(&mut buf).unwrap(), None);
    assert_eq!(r.next_pages(&mut buf).unwrap(), None);
    assert_eq!(r.into_inner(), b"after");
}

#[test]
fn truncation_anywhere_is_truncated() {
    let img = write_image(&small_writes(), 0);
    for cut in 0..img.len() {
        for threads in [0, 2] {
            match read_image(&img[..cut], threads) {
                Err(ImageError::Truncated { offset }) => assert_eq!(offset, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
    assert_eq!(read_image(&img, 0).unwrap(), flatten(&small_writes()));
}

#[test]
fn every_bit_flip_is_detected() {
    let img = write_image(&small_writes(), 0);
    for pos in 0..img.len() {
        for bit in 0..8 {
            let mut bad = img.clone();
            bad[pos] ^= 1 << bit;
            // The threaded reader on a sample (it starts threads per image).
            let threads = if (pos + bit) % 61 == 0 { 2 } else { 0 };
            match read_image(&bad, threads) {
                Ok(_) => panic!("flip of bit {bit} at byte {pos} not detected"),
                Err(e) => assert!(is_image_error(&e), "flip at {pos}: {e:?}"),
            }
        }
    }
}

#[test]
fn random_garbage_never_panics() {
    let img = write_image(&small_writes(), 0);
    let mut rng = Rng(99);
    for _ in 0..3000 {
        let mut bad = img.clone();
        for _ in 0..1 + rng.below(8) {
            let at = PRELUDE_LEN + rng.below((img.len() - PRELUDE_LEN) as u64) as usize;
            bad[at] = rng.next() as u8;
        }
        if bad != img {
            let e = read_image(&bad, 0).unwrap_err();
            assert!(is_image_error(&e), "{e:?}");
        }
    }
}

#[test]
fn bad_magic_and_version() {
    assert!(matches!(
        read_image(b"hello, world", 0),
        Err(ImageError::NotAnImage)
    ));
    assert!(matches!(
        read_image(b"MRUNIMX", 0),
        Err(ImageError::NotAnImage)
    ));
    let mut img = write_image(&small_writes(), 0);
    // Version 1 images (one thread folded into the process) are refused by name.
    img[8..12].copy_from_slice(&1u32.to_le_bytes());
    match read_image(&img, 0) {
        Err(
            e @ ImageError::Version {
                found: 1,
                supported: FORMAT_VERSION,
            },
        ) => {
            assert!(e.to_string().contains("version 1 is not supported"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropped_duplicated_or_reordered_records_are_detected() {
    let img = write_image(&small_writes(), 0);
    let n = records(&img).len(); // header, state, 3 pages, end
    assert_eq!(n, 6);
    let corrupt = |order: &[usize]| match read_image(&splice(&img, order), 0) {
        Err(ImageError::Corrupt { what, .. }) => what,
        other => panic!("{order:?}: {other:?}"),
    };
    assert!(corrupt(&[0, 1, 2, 4, 5]).contains("page records"));
    assert!(corrupt(&[0, 1, 2, 3, 3, 4, 5]).contains("page records"));
    assert!(corrupt(&[0, 1, 3, 2, 4, 5]).contains("chain"));
    assert!(matches!(
        read_image(&splice(&img, &[0, 2, 3, 4, 5]), 0),
        Err(ImageError::Unexpected {
            expected: "state",
            found: "pages",
            ..
        })
    ));
    assert!(matches!(
        read_image(&splice(&img, &[0, 1, 2, 3, 4]), 0),
        Err(ImageError::Truncated { .. })
    ));
    assert!(matches!(
        read_image(&splice(&img, &[1, 0, 2, 3, 4, 5]), 0),
        Err(ImageError::Unexpected {
            expected: "header",
            found: "state",
            ..
        })
    ));
}

#[test]
fn well_framed_bad_page_payloads_are_corrupt() {
    let img = write_image(&small_writes(), 0);
    let recs = records(&img);
    let first_pages = recs[2].clone();
    let payload = &img[first_pages.start + 5..first_pages.end - 4];
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    // One more page announced than the frame holds.
    let mut p = payload.to_vec();
    p[8..12].copy_from_slice(&3u32.to_le_bytes());
    cases.push((p, "decompress"));
    // Garbage instead of a zstd frame.
    let mut p = payload[..13].to_vec();
    p.extend_from_slice(&[0x55; 40]);
    cases.push((p, "decompress"));
    // An unknown encoding.
    let mut p = payload.to_vec();
    p[12] = 9;
    cases.push((p, "encoding"));
    // Raw pages one byte short.
    let mut p = payload[..13].to_vec();
    p[12] = 0;
    p.extend_from_slice(&vec![0x55; 2 * PAGE_SIZE - 1]);
    cases.push((p, "raw pages"));
    let mut p = payload.to_vec();
    p[0] = 1; // unaligned address
    cases.push((p, "aligned"));
    let mut p = payload.to_vec();
    p[8..12].copy_from_slice(&0u32.to_le_bytes());
    cases.push((p, "pages"));
    cases.push((payload[..7].to_vec(), "shorter"));
    for (p, needle) in cases {
        let mut rec = Vec::new();
        encode_record(Kind::Pages, &p, &mut rec).unwrap();
        let mut bad = img[..first_pages.start].to_vec();
        bad.extend_from_slice(&rec);
        bad.extend_from_slice(&img[first_pages.end..]);
        for threads in [0, 2] {
            match read_image(&bad, threads) {
                Err(ImageError::Corrupt { what, offset }) => {
                    assert!(what.contains(needle), "{what}");
                    assert_eq!(offset, first_pages.start as u64);
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
    }
}

#[test]
fn oversized_and_unknown_records() {
    let img = write_image(&small_writes(), 0);
    let mut big = img[..PRELUDE_LEN].to_vec();
    big.push(Kind::Header as u8);
    big.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read_image(&big, 0),
        Err(ImageError::TooLarge {
            offset: 12,
            kind: "header",
            ..
        })
    ));
    let mut unknown = img.clone();
    unknown[PRELUDE_LEN] = 9;
    assert!(matches!(
        read_image(&unknown, 0),
        Err(ImageError::Corrupt { offset: 12, .. })
    ));
}

#[test]
fn writer_rejects_misuse() {
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(1), 0).unwrap();
    assert!(matches!(
        w.write_pages(0x1000, &[0; 4096]),
        Err(ImageError::InvalidUse { .. })
    ));
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(1), 0).unwrap();
    w.write_state(&state()).unwrap();
    assert!(matches!(
        w.write_pages(0x1000, &[0; 100]),
        Err(ImageError::InvalidUse { .. })
    ));
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(1), 0).unwrap();
    w.write_state(&state()).unwrap();
    assert!(matches!(
        w.write_pages(0x1001, &[0; 4096]),
        Err(ImageError::InvalidUse { .. })
    ));
    assert!(matches!(
        w.write_pages(u64::MAX - 4095, &[0; 8192]),
        Err(ImageError::InvalidUse { .. })
    ));
    // A rejected call does not spoil the image.
    w.write_pages(0x1000, &[0; 4096]).unwrap();
    w.finish().unwrap();
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(1), 0).unwrap();
    w.write_state(&state()).unwrap();
    assert!(matches!(
        w.write_pages(0x1000, &[]),
        Err(ImageError::InvalidUse { .. })
    ));
    let mut w = ImageWriter::with_threads(Vec::new(), &header(), Compression::Zstd(1), 0).unwrap();
    w.write_state(&state()).unwrap();
    assert!(matches!(
        w.write_state(&state()),
        Err(ImageError::InvalidUse { .. })
    ));
}

#[test]
fn reader_rejects_misuse() {
    let img = write_image(&small_writes(), 0);
    let (mut r, _) = ImageReader::open_with_threads(&img[..], 0).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        r.next_pages(&mut buf),
        Err(ImageError::InvalidUse { .. })
    ));
    r.read_state().unwrap();
    assert!(matches!(r.read_state(), Err(ImageError::InvalidUse { .. })));
}
