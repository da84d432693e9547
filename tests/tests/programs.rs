//! Real programs checkpointed mid-run (after part of their output appeared) and restored must
//! produce output byte-identical to an uninterrupted run.

mod common;

use common::*;
use std::ffi::OsStr;

#[test]
fn gzip_stdout_file_opened_by_shell() {
    let sb = Sandbox::new("gzip-file");
    let input = text_file(32 * MIB);
    migrate_file_output(
        &sb,
        "gzip -9",
        r#"exec gzip -9 < "$1" > "$2""#,
        &input,
        1,
        Progress::OutputGrows,
    );
}

#[test]
fn gzip_stdout_pipe() {
    let sb = Sandbox::new("gzip-pipe");
    let input = text_file(24 * MIB);
    migrate_pipe_output(
        &sb,
        "gzip -9 -c",
        "gzip",
        &["-9".as_ref(), "-c".as_ref(), input.as_os_str()],
        &[],
        1,
    );
}

#[test]
fn xz_single_thread() {
    let sb = Sandbox::new("xz");
    let input = text_file(4 * MIB);
    migrate_file_output(
        &sb,
        "xz -T1",
        r#"exec xz -T1 -6 -c < "$1" > "$2""#,
        &input,
        1,
        Progress::OutputGrows,
    );
}

/// Issue 10: Python writing into `tempfile.TemporaryFile()` (a deleted file held open) and
/// reading it back, checkpointed and restored twice mid-run.
#[test]
fn python_temporary_file() {
    let sb = Sandbox::new("py-tempfile");
    migrate_file_output(
        &sb,
        "python3 TemporaryFile",
        &format!("exec > \"$2\"; {}", tempfile_script()),
        &text_file(4 * MIB),
        2,
        Progress::OutputGrows,
    );
}

#[test]
fn bzip2_stdout_pipe() {
    let sb = Sandbox::new("bzip2");
    let input = text_file(16 * MIB);
    migrate_pipe_output(
        &sb,
        "bzip2 -9 -c",
        "bzip2",
        &["-9".as_ref(), "-c".as_ref(), input.as_os_str()],
        &[],
        1,
    );
}

#[test]
fn python3_dict_loop() {
    let sb = Sandbox::new("python");
    let script = sb.path("dict_loop.py");
    std::fs::write(&script, PYTHON_DICT_LOOP).expect("write the python script");
    migrate_pipe_output(
        &sb,
        "python3 dict loop",
        python3(),
        &["-u".as_ref(), script.as_os_str()],
        &[("PYTHONHASHSEED", "0")],
        1,
    );
}

const PYTHON_DICT_LOOP: &str = r#"
import sys
d = {}
x = 12345
for i in range(400000):
    x = (x * 1103515245 + 12345) & 0x7fffffff
    d["k%d" % (x % 200000)] = d.get("k%d" % (x % 200000), 0) + i
for r in range(24):
    s = 0
    for k, v in d.items():
        s = (s * 31 + hash(k) + v + r) & 0xffffffffffff
    d["round%d" % r] = s
    print("round", r, len(d), s, flush=True)
print("result", sum(d.values()) % 1000000007)
"#;

#[test]
fn awk_aggregation() {
    let sb = Sandbox::new("awk");
    let input = text_file(64 * MIB);
    migrate_pipe_output(
        &sb,
        "gawk aggregation",
        "gawk", // not mawk: the program uses PROCINFO["sorted_in"]
        &[AWK_PROGRAM.as_ref(), input.as_os_str()],
        &[],
        1,
    );
}

/// Aggregates per key, per key prefix and per word, printing progress every 5000 lines and a
/// short summary (with a hash over all the aggregates) at the end.
const AWK_PROGRAM: &str = r#"
{ n[$1]++; s[$1] += $2; g[substr($1, 1, 3)] += $2; for (i = 3; i <= NF; i++) wc[$i]++; c += length($0) }
NR % 5000 == 0 { printf "%d %d %d\n", NR, length(wc), c; fflush() }
END {
    PROCINFO["sorted_in"] = "@ind_str_asc"
    for (k in g) printf "%s %d\n", k, g[k]
    for (k in n) h = (h * 31 + n[k] * 7 + s[k]) % 1000000007
    for (k in wc) h = (h * 31 + wc[k]) % 1000000007
    printf "total %d %d %d\n", NR, c, h
}
"#;

#[test]
fn sort_single_thread() {
    let sb = Sandbox::new("sort");
    let input = text_file(64 * MIB);
    let tmp = sb.mkdir("sort-tmp");
    // Case-folded multi-key comparisons keep sort busy for seconds on 64 MiB.
    let script = format!(
        r#"LC_ALL=C; export LC_ALL; exec sort --parallel=1 -S 4M -T '{}' -f -k3,3 -k5,5 -k2,2n < "$1" > "$2""#,
        tmp.display()
    );
    migrate_file_output(
        &sb,
        "sort --parallel=1",
        &script,
        &input,
        1,
        Progress::InputRead,
    );
}

#[test]
fn static_checksum_program() {
    let sb = Sandbox::new("static");
    migrate_pipe_output(
        &sb,
        "checksum_static",
        sb.victim("checksum_static"),
        &["60"],
        &[],
        1,
    );
}

#[test]
fn dynamic_checksum_program() {
    let sb = Sandbox::new("dynamic");
    migrate_pipe_output(&sb, "checksum", sb.victim("checksum"), &["60"], &[], 1);
}

/// sha256sum reading a pipe the test feeds: checkpointed while blocked in read() with half the
/// data hashed, restored with the other half written to the restore command's stdin.
#[test]
fn sha256sum_of_stdin_across_restore() {
    let sb = Sandbox::new("sha256sum");
    let input = text_file(64 * MIB);
    let data = std::fs::read(&input).expect("read the input");
    let want = sb
        .run(
            "sha256sum (uninterrupted)",
            "sha256sum",
            &[] as &[&str],
            Input::File(input),
        )
        .stdout;
    assert!(
        want.len() == 68 && want.ends_with(b"  -\n"),
        "unexpected sha256sum output {:?}",
        String::from_utf8_lossy(&want)
    );

    let half = data.len() / 2;
    let mut original = sb.spawn(
        "sha256sum",
        "sha256sum",
        &[] as &[&str],
        Input::Pipe,
        Output::Pipe,
    );
    original.write_stdin(&data[..half]);
    let fd = original.stdin_fd();
    let drained = wait_until(TIMEOUT, || {
        let mut n: libc::c_int = -1;
        // SAFETY: FIONREAD writes one int through the pointer, which is valid.
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
        r == 0 && n == 0
    });
    assert!(drained, "sha256sum never read the data in its pipe");
    wait_until_sleeping(original.pid());
    let image = sb.path("sha.img");
    sb.mrunctl().checkpoint_ok(original.pid(), &image);
    original.close_stdin();
    let done = original.finish();
    done.assert_signal(libc::SIGKILL);
    assert!(
        done.stdout.is_empty(),
        "sha256sum printed before the end: {}",
        done.describe()
    );

    let mut restore = sb.mrunctl().restore(&image, Input::Pipe, Output::Pipe);
    restore.write_stdin(&data[half..]);
    restore.close_stdin();
    let restored = restore.finish();
    restored.assert_success();
    assert_same_bytes("sha256sum", &restored.stdout, &want);
}

// ---------------------------------------------------------------------------------------------
// Multi-threaded programs (issue 8)
// ---------------------------------------------------------------------------------------------

/// `sh -c` script running `program args...` from "$1" to "$2".
fn file_script(program: &str, args: &[&str]) -> String {
    format!(r#"exec {program} {} < "$1" > "$2""#, args.join(" "))
}

#[test]
fn xz_two_threads() {
    let sb = Sandbox::new("xz-t2");
    xz_two_threads_to_file(&sb, "xz -T2", 1);
}

#[test]
fn xz_threads_per_cpu() {
    let sb = Sandbox::new("xz-t0");
    let input = text_file(8 * MIB);
    migrate_file_output(
        &sb,
        "xz -T0",
        &file_script("xz", &XZ_T0_ARGS),
        &input,
        1,
        Progress::OutputGrows,
    );
}

#[test]
fn pigz_two_threads() {
    let sb = Sandbox::new("pigz");
    let input = sb.input(&text_file(64 * MIB));
    let mut args: Vec<&OsStr> = PIGZ_ARGS.iter().map(OsStr::new).collect();
    args.push(input.as_os_str());
    migrate_pipe_output(&sb, "pigz -p 2", "pigz", &args, &[], 1);
}

/// sort on 2 threads with 100 MB of buffer: checkpointed while its sorting threads run.
#[test]
fn sort_two_threads() {
    let sb = Sandbox::new("sort-t2");
    let input = text_file(64 * MIB);
    let tmp = sb.mkdir("sort-tmp");
    let script = format!(
        r#"LC_ALL=C; export LC_ALL; exec sort {} -T '{}' < "$1" > "$2""#,
        SORT_THREADED_ARGS.join(" "),
        tmp.display()
    );
    migrate_file_output(
        &sb,
        "sort --parallel=2",
        &script,
        &input,
        1,
        Progress::ThreadsRunning,
    );
}

#[test]
fn python3_three_threads() {
    let sb = Sandbox::new("python-threads");
    let script = python_workers();
    let mut args: Vec<&OsStr> = vec!["-u".as_ref(), script.as_os_str()];
    args.extend(PYTHON_WORKERS_ARGS.iter().map(OsStr::new));
    migrate_pipe_output(&sb, "python3 3 threads", python3(), &args, &[], 1);
}

#[test]
fn go_goroutines_on_several_threads() {
    let sb = Sandbox::new("go-spread");
    migrate_pipe_output(
        &sb,
        "go spread",
        go_spread(),
        &GO_SPREAD_ARGS,
        &[("GOMAXPROCS", "2")],
        1,
    );
}

/// A process with 1,500 descriptors (more than a restore once carried: those past the
/// 1,024th were dropped without a word): all come back, each the same device.
#[test]
fn python3_with_1500_descriptors() {
    let sb = Sandbox::new("python-fds");
    let script = sb.path("many_fds.py");
    std::fs::write(&script, PYTHON_MANY_FDS).expect("write the python script");
    migrate_pipe_output(
        &sb,
        "python3 with 1500 fds",
        python3(),
        &["-u".as_ref(), script.as_os_str()],
        &[],
        1,
    );
}

const PYTHON_MANY_FDS: &str = r#"
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(1500)]
for i in range(60):
    x = sum(range(200000))
    print(i, len(fds), max(fds) > 1024, x)
alive = sum(1 for f in fds if os.path.exists(f"/proc/self/fd/{f}"))
same = all(os.fstat(f).st_rdev == os.fstat(fds[0]).st_rdev for f in fds)
print("alive", alive, "same device", same)
"#;
