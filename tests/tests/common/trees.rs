//! Jobs that are trees of processes (issue 9): the scripts the tree tests run, shared by the
//! checkpoint, chain and unprivileged tests.

use super::data::{text_file, MIB};
use super::sandbox::Sandbox;
use super::scenario::{migrate_file_output, Progress};

/// `sh` running a pipeline: it waits for gzip and sha256sum, joined by a pipe whose buffered
/// bytes travel with the job; the result is written at the very end.
pub const PIPELINE: &str = r#"gzip -9 < "$1" | sha256sum > "$2""#;

/// A shell loop calling a compressor per round in a subshell, as a build or batch script
/// does: the tree changes shape all the time.
pub const LOOP: &str =
    r#"exec > "$2"; for i in 1 2 3 4 5 6 7 8; do (gzip -6 < "$1" | wc -c; echo "round $i"); done"#;

/// Python's `multiprocessing.Pool(2)` mapping a CPU-bound function over the chunks of file
/// "$1", printing one line per chunk, in order: a parent with three threads of its own, two
/// workers, pipes between them all, and the POSIX semaphores (`/dev/shm` files, mapped shared
/// and already unlinked) that guard those pipes.
pub const POOL_PY: &str = r#"
import hashlib, multiprocessing, sys
def work(item):
    i, chunk = item
    d = chunk
    for _ in range(100000):
        d = hashlib.sha256(d).digest()
    return "%d %d %s" % (i, len(chunk), d.hex())
if __name__ == "__main__":
    data = open(sys.argv[1], "rb").read()
    chunks = [(i, data[o:o + 65536]) for i, o in enumerate(range(0, len(data), 65536))]
    with multiprocessing.Pool(2) as pool:
        for line in pool.imap(work, chunks):
            print(line, flush=True)
"#;

/// A Python program that compresses the chunks of file "$1" into a `tempfile.TemporaryFile()`
/// (a deleted file it holds open), printing a line per chunk, then reads the file back and
/// prints its size and digest: the file's contents must survive every move.
pub const TEMPFILE_PY: &str = r#"
import hashlib, lzma, sys, tempfile
data = open(sys.argv[1], "rb").read()
with tempfile.TemporaryFile() as t:
    for i, o in enumerate(range(0, len(data), 65536)):
        packed = lzma.compress(data[o:o + 65536], preset=6)
        t.write(len(packed).to_bytes(4, "little") + packed)
        print("chunk", i, len(packed), flush=True)
    t.seek(0)
    back = t.read()
    print("read back", len(back), hashlib.sha256(back).hexdigest(), flush=True)
"#;

/// [`TEMPFILE_PY`] as a shell script reading "$1" and writing to standard output.
pub fn tempfile_script() -> String {
    format!("exec python3 -c '{TEMPFILE_PY}' \"$1\"")
}

/// [`POOL_PY`] as a shell script reading "$1" and writing to standard output.
pub fn pool_script() -> String {
    format!("exec python3 -c '{POOL_PY}' \"$1\"")
}

/// The pool checkpointed after some of its results, `hops` times.
pub fn pool_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        &format!("exec > \"$2\"; {}", pool_script()),
        &text_file(4 * MIB),
        hops,
        Progress::OutputGrows,
    );
}

/// The pipeline checkpointed mid-run (once gzip has read part of its input) `hops` times.
pub fn pipeline_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        PIPELINE,
        &text_file(16 * MIB),
        hops,
        Progress::MemberInputRead("gzip"),
    );
}

/// The loop checkpointed after some of its rounds, `hops` times.
pub fn loop_to_file(sb: &Sandbox, label: &str, hops: usize) {
    migrate_file_output(
        sb,
        label,
        LOOP,
        &text_file(4 * MIB),
        hops,
        Progress::OutputGrows,
    );
}
