//! Damaged or foreign images are rejected: one line on stderr, a non-zero exit code (no crash,
//! no panic), and nothing of the process comes back to life.
//!
//! Every test takes a fresh image of a `refuse plain` ticker and then creates its stop file, so
//! a process wrongly restored from a damaged image would print "STOPPING ..." at once and be
//! caught by the empty-stdout check.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::PathBuf;

/// Checkpoints a ticker into `image.img` and returns the image's bytes.
fn fresh_image(sb: &Sandbox, envs: &[(&str, &str)]) -> (PathBuf, Vec<u8>) {
    let stop = sb.path("stop");
    let mut victim = sb.spawn_victim(
        "refuse",
        &[OsStr::new("plain"), stop.as_os_str()],
        Input::Null,
    );
    victim.wait_for_stdout("tick 2\n");
    let image = sb.path("image.img");
    let out = sb
        .mrunctl()
        .checkpoint_with(victim.pid(), image.as_os_str(), &[], envs);
    out.assert_success();
    victim.finish().assert_signal(libc::SIGKILL);
    sb.touch("stop");
    let bytes = std::fs::read(&image).expect("read the image");
    assert!(
        bytes.len() > 4096,
        "the image is implausibly small: {} bytes",
        bytes.len()
    );
    (image, bytes)
}

/// Why restoring `image` did not fail cleanly, or None if it did.
fn clean_rejection(sb: &Sandbox, image: &std::path::Path, keywords: &[&str]) -> Option<String> {
    let done = sb
        .mrunctl()
        .restore(image, Input::Null, Output::Pipe)
        .finish();
    judge(&done, keywords)
}

fn judge(done: &Finished, keywords: &[&str]) -> Option<String> {
    let err = done.stderr_text();
    let lines: Vec<&str> = err.lines().collect();
    let problem = if err.contains("panicked at") {
        "panicked"
    } else if !matches!(done.status.code(), Some(c) if c != 0) {
        "did not exit with a non-zero code"
    } else if lines.len() != 1 || lines[0].trim().is_empty() {
        "not exactly one line on stderr"
    } else if !done.stdout.is_empty() {
        "the process ran (output on stdout)"
    } else if !keywords.is_empty()
        && !keywords
            .iter()
            .any(|k| lines[0].to_lowercase().contains(&k.to_lowercase()))
    {
        "the error line mentions none of the expected words"
    } else {
        return None;
    };
    Some(format!("{problem}: {}", done.describe()))
}

fn report(what: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} {what} were not rejected cleanly:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Control: the undamaged image restores and the ticker finishes, so the rejections below are
/// about the damage.
#[test]
fn intact_image_restores() {
    let sb = Sandbox::new("bad-control");
    let (image, _) = fresh_image(&sb, &[]);
    let done = sb
        .mrunctl()
        .restore(&image, Input::Null, Output::Pipe)
        .finish();
    done.assert_success();
    assert!(
        done.stdout_text().contains("ALL PASS"),
        "{}",
        done.describe()
    );
}

#[test]
fn truncated_images() {
    let sb = Sandbox::new("bad-truncated");
    let (_, bytes) = fresh_image(&sb, &[]);
    let n = bytes.len();
    let mut cuts = vec![
        0,
        1,
        4,
        8,
        16,
        32,
        64,
        128,
        512,
        4096,
        n / 8,
        n / 4,
        n / 2,
        3 * n / 4,
        n - 4096,
        n - 64,
        n - 8,
        n - 1,
    ];
    cuts.sort_unstable();
    cuts.dedup();
    let mut failures = Vec::new();
    for cut in cuts.into_iter().filter(|&c| c < n) {
        let path = sb.path(&format!("cut-{cut}.img"));
        std::fs::write(&path, &bytes[..cut]).expect("write the truncated image");
        if let Some(why) = clean_rejection(&sb, &path, &[]) {
            failures.push(format!("image cut to {cut} of {n} bytes: {why}"));
        }
    }
    report("truncated images", failures);
}

#[test]
fn truncated_image_on_stdin() {
    let sb = Sandbox::new("bad-truncated-stdin");
    let (_, bytes) = fresh_image(&sb, &[]);
    let n = bytes.len();
    let mut failures = Vec::new();
    for cut in [0, 16, n / 2, n - 1] {
        let path = sb.path(&format!("cut-{cut}.img"));
        std::fs::write(&path, &bytes[..cut]).expect("write the truncated image");
        let done = sb
            .mrunctl()
            .restore_from_stdin(Input::File(path), Output::Pipe)
            .finish();
        if let Some(why) = judge(&done, &[]) {
            failures.push(format!("image cut to {cut} of {n} bytes, on stdin: {why}"));
        }
    }
    report("truncated images on stdin", failures);
}

#[test]
fn images_with_one_flipped_byte() {
    let sb = Sandbox::new("bad-flipped");
    let (_, bytes) = fresh_image(&sb, &[]);
    let n = bytes.len();
    let mut positions = vec![
        0,
        1,
        3,
        5,
        8,
        12,
        20,
        40,
        64,
        100,
        200,
        500,
        1000,
        n / 3,
        n / 2,
        2 * n / 3,
        n - 100,
        n - 9,
        n - 4,
        n - 1,
    ];
    positions.sort_unstable();
    positions.dedup();
    let mut failures = Vec::new();
    for pos in positions.into_iter().filter(|&p| p < n) {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 0xff;
        let path = sb.path(&format!("flip-{pos}.img"));
        std::fs::write(&path, &damaged).expect("write the damaged image");
        if let Some(why) = clean_rejection(&sb, &path, &[]) {
            failures.push(format!("byte {pos} of {n} flipped: {why}"));
        }
    }
    report("images with a flipped byte", failures);
}

/// Re-encodes `bytes` with `change` applied to the header's compatibility facts: a valid,
/// checksummed image as another machine would have written it.
fn reencoded(bytes: &[u8], change: impl FnOnce(&mut mrun_core::image::model::Compat)) -> Vec<u8> {
    use mrun_core::image::{Compression, ImageReader, ImageWriter};
    let (mut reader, mut header) = ImageReader::open(bytes).expect("open the image");
    let state = reader.read_state().expect("read the state");
    change(&mut header.compat);
    let mut writer =
        ImageWriter::new(Vec::new(), &header, Compression::Zstd(1)).expect("start an image");
    writer.write_state(&state).expect("write the state");
    let mut buf = Vec::new();
    while let Some(addr) = reader.next_pages(&mut buf).expect("read pages") {
        writer.write_pages(addr, &buf).expect("write pages");
    }
    writer.finish().expect("finish the image")
}

fn assert_refused_as_incompatible(
    name: &str,
    change: impl FnOnce(&mut mrun_core::image::model::Compat),
) {
    let sb = Sandbox::new(name);
    let (_, bytes) = fresh_image(&sb, &[]);
    let path = sb.path("foreign.img");
    std::fs::write(&path, reencoded(&bytes, change)).expect("write the foreign image");
    if let Some(why) = clean_rejection(&sb, &path, &["incompatible"]) {
        panic!("an image from an incompatible machine was not refused: {why}");
    }
}

#[test]
fn image_with_incompatible_xsave_features() {
    assert_refused_as_incompatible("bad-xfeatures", |c| c.xfeatures ^= 1 << 9);
}

#[test]
fn image_from_another_kernels_vdso() {
    assert_refused_as_incompatible("bad-vdso", |c| {
        if let Some(b) = c.vdso.get_mut(100) {
            *b ^= 0x55;
        }
    });
}

#[test]
fn image_from_another_architecture() {
    assert_refused_as_incompatible("bad-arch", |c| c.arch = "aarch64".into());
}

#[test]
fn files_that_are_not_images() {
    let sb = Sandbox::new("bad-garbage");
    let mut noise = Vec::with_capacity(64 * 1024);
    let mut x: u32 = 12345;
    for _ in 0..64 * 1024 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push((x >> 16) as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"this is not a checkpoint image\n".to_vec()),
        ("zeros", vec![0u8; 8192]),
        ("noise", noise),
        (
            "elf",
            std::fs::read(victim("getpid")).expect("read a binary"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, content) in cases {
        let path = sb.path(&format!("{name}.img"));
        std::fs::write(&path, content).expect("write the file");
        if let Some(why) = clean_rejection(&sb, &path, &[]) {
            failures.push(format!("{name}: {why}"));
        }
    }
    report("non-image files", failures);
}

#[test]
fn missing_image_file() {
    let sb = Sandbox::new("bad-missing");
    let path = sb.path("no-such.img");
    if let Some(why) = clean_rejection(&sb, &path, &["no-such.img"]) {
        panic!("restore of a missing file: {why}");
    }
}

#[test]
fn checkpoint_of_a_pid_that_does_not_exist() {
    let sb = Sandbox::new("bad-pid");
    let gone = sb.spawn("true", "true", &[] as &[&str], Input::Null, Output::Null);
    let pid = gone.pid();
    gone.finish().assert_success();
    let out = sb.mrunctl().checkpoint(pid, &sb.path("gone.img"));
    out.assert_one_line_error(&[&pid.to_string()]);
}
