/* mrun-bench victim: touch N MiB with known contents, start THREADS-1 more threads, say so,
 * block on stdin, then check that the memory still holds what was written and that every thread
 * is still itself.
 *
 *   victim SIZE_MIB random|text [THREADS] [write=MBPS]
 *
 * THREADS (default 1) counts the main thread, which fills the memory and blocks in read(0).
 * The others are live threads with default (glibc) stacks: thread 1 spins on a counter; the rest
 * take turns waiting in pthread_cond_wait, sleeping in a 100 ms nanosleep loop, and waiting in
 * a raw FUTEX_WAIT. Each records its gettid(), its index in a __thread variable and a 256-byte
 * pattern on its own stack; once stopped (after stdin returns) each checks all three, so a
 * restore that loses, swaps or corrupts a thread makes the victim fail, or hang in join.
 *
 * stdout, once filled and all threads started:
 *     "ready\nsum=<hex> fill_ns=<n> check_ns=<n> threads=<n>\n"
 * stdout, after stdin returns (EOF or data):
 *     "verified=<ok|bad> check_ns=<n> unmap_ns=<n> threads=<n> threads_ok=<n> join_ns=<n> cpu_ns=<n>\n"
 * (join_ns: waking every other thread, joining it and collecting its check; cpu_ns: the main
 * thread's CPU time, user and system, over the check, the munmap and the join, so that the bench
 * can take the verification out of the restoring processes' CPU time.)
 * Exit status 0 when the checksum matches and every thread checked out, 1 when not, 2 on a
 * usage or system error.
 *
 * write=MBPS (mrun-bench-migrate: a job that keeps writing while it is moved): one more thread,
 * started right before "ready", rewrites whole 4 KiB pages of the memory, each chosen at random
 * over the whole of it, with new contents of the same kind (random or text), MBPS * 10^6 bytes
 * a second, paced by clock_nanosleep every 5 ms (a pause longer than 100 ms, e.g. while frozen,
 * is not made up: the time is counted as lost). The contents then no longer match sum=, so the
 * check after stdin returns is another one: the memory's page sum (the XOR over all pages of a
 * hash of the page's bytes and its index), computed right after filling and updated by the
 * writer at each page it rewrites (the old page's hash out, the new one's in), must match the
 * page sum of the memory as it is then, the writer stopped. A page the move lost, sent stale
 * or put at another address makes it differ. sum= (before any write) stays the checksum of
 * pattern.rs. Extra fields, in that mode only:
 *     ready report: "write_mbps=<n>"
 *     verified line: "written=<bytes> write_ns=<n> lost_ns=<n> max_gap_ns=<n>" (bytes rewritten
 *     over write_ns, of which lost_ns went by without writing: paused or too late; max_gap_ns:
 *     the longest time between two wake-ups of the writer, normally about 5 ms: a move's
 *     downtime as the job itself lived it, give or take one period)
 *
 * The contents and the checksum must stay byte-for-byte equal to bench/src/pattern.rs: the
 * bench compares the checksum printed here with its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *const words[64] = {
    "the", "of", "and", "to", "in", "a", "is", "that",
    "for", "it", "as", "was", "with", "be", "by", "on",
    "not", "he", "this", "are", "or", "his", "from", "at",
    "which", "but", "have", "an", "had", "they", "you", "were",
    "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so",
    "process", "memory", "image", "page", "restore", "checkpoint", "kernel", "signal",
    "file", "machine", "network", "thread", "migrate", "register", "window", "system",
};

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_of(uint64_t *state) { /* xorshift64* */
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 0x2545F4914F6CDD1Dull;
}

static uint64_t clock_ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uint64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static void fill_random(unsigned char *m, size_t n, uint64_t *state) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = next_of(state);
        memcpy(m + i, &r, 8); /* x86_64: little-endian, as pattern.rs writes it */
    }
}

/* Words from a 64-word list, four per random number, each followed by one separator:
 * '.', ',' or '\n' one time in 64 each, else ' '. zstd -1 makes about 3.4x of it. */
static void fill_text(unsigned char *m, size_t n, uint64_t *state) {
    char slot[64][16];
    size_t len[64];
    for (int i = 0; i < 64; i++) {
        len[i] = strlen(words[i]);
        memset(slot[i], ' ', 16);
        memcpy(slot[i], words[i], len[i]);
    }
    size_t p = 0;
    while (p + 64 <= n) {
        uint64_t r = next_of(state);
        for (int k = 0; k < 4; k++) {
            unsigned v = (unsigned)(r >> (16 * k)) & 0xffff;
            unsigned w = v & 63, s = (v >> 6) & 63;
            memcpy(m + p, slot[w], 16);
            p += len[w];
            m[p++] = s == 0 ? '.' : s == 1 ? ',' : s == 2 ? '\n' : ' ';
        }
    }
    memset(m + p, '\n', n - p);
}

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Four independent lanes so that the pass runs at memory speed. n is a multiple of 32. */
static uint64_t checksum(const unsigned char *m, size_t n) {
    const uint64_t K = 0x9E3779B97F4A7C15ull;
    uint64_t h0 = 1, h1 = 2, h2 = 3, h3 = 4;
    for (size_t i = 0; i < n; i += 32) {
        uint64_t w[4];
        memcpy(w, m + i, 32);
        h0 = rotl(h0 ^ w[0], 23) * K;
        h1 = rotl(h1 ^ w[1], 23) * K;
        h2 = rotl(h2 ^ w[2], 23) * K;
        h3 = rotl(h3 ^ w[3], 23) * K;
    }
    return h0 ^ rotl(h1, 16) ^ rotl(h2, 32) ^ rotl(h3, 48);
}

static int say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (int off = 0; off < len;) {
        ssize_t w = write(1, buf + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (int)w;
    }
    return 0;
}

/* ---- the other threads ---- */

enum kind { SPIN, COND, SLEEP, FUTEX };

struct worker {
    pthread_t th;
    unsigned index;
    enum kind kind;
    pid_t tid;
    volatile uint64_t spins;
};

static atomic_int started;
static atomic_int stop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stop_cond; /* under mu */
static atomic_uint futex_word;
static __thread unsigned my_index;

static pid_t tid_now(void) { return (pid_t)syscall(SYS_gettid); }

static void *work(void *arg) {
    struct worker *w = arg;
    my_index = w->index;
    w->tid = tid_now();
    volatile unsigned char canary[256];
    for (unsigned i = 0; i < sizeof canary; i++)
        canary[i] = (unsigned char)(w->index * 31u + i);
    atomic_fetch_add(&started, 1);

    switch (w->kind) {
    case SPIN:
        while (!atomic_load_explicit(&stop, memory_order_relaxed))
            w->spins++;
        break;
    case COND:
        pthread_mutex_lock(&mu);
        while (!stop_cond)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
        break;
    case SLEEP:
        while (!atomic_load(&stop)) {
            struct timespec t = {0, 100 * 1000 * 1000};
            nanosleep(&t, NULL);
        }
        break;
    case FUTEX:
        while (atomic_load(&futex_word) == 0)
            syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
        break;
    }

    int ok = tid_now() == w->tid && my_index == w->index && pthread_equal(pthread_self(), w->th);
    for (unsigned i = 0; i < sizeof canary; i++)
        ok &= canary[i] == (unsigned char)(w->index * 31u + i);
    if (!ok)
        fprintf(stderr, "victim: thread %u (tid %d, kind %d) is not itself after restore\n",
                w->index, (int)w->tid, (int)w->kind);
    return ok ? w : NULL;
}

/* Starts threads 1..n-1 and waits until each has recorded itself. */
static struct worker *start_threads(unsigned n) {
    if (n < 2)
        return NULL;
    struct worker *ws = calloc(n, sizeof *ws);
    if (!ws) {
        perror("victim: calloc");
        exit(2);
    }
    for (unsigned i = 1; i < n; i++) {
        ws[i].index = i;
        ws[i].kind = i == 1 ? SPIN : (enum kind)(COND + (i - 2) % 3);
        int e = pthread_create(&ws[i].th, NULL, work, &ws[i]);
        if (e != 0) {
            fprintf(stderr, "victim: pthread_create of thread %u: %s\n", i, strerror(e));
            exit(2);
        }
    }
    while (atomic_load(&started) < (int)(n - 1)) {
        struct timespec t = {0, 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return ws;
}

/* Wakes and joins threads 1..n-1; returns how many checked out, counting the main thread. */
static unsigned stop_threads(struct worker *ws, unsigned n, pid_t main_tid) {
    unsigned ok = tid_now() == main_tid && my_index == 0;
    if (n < 2)
        return ok;
    atomic_store(&stop, 1);
    pthread_mutex_lock(&mu);
    stop_cond = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    atomic_store(&futex_word, 1);
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    for (unsigned i = 1; i < n; i++) {
        void *r = NULL;
        if (pthread_join(ws[i].th, &r) == 0 && r == &ws[i])
            ok++;
    }
    return ok;
}

/* ---- the writer (write=MBPS) ---- */

#define PAGE 4096u
#define WRITE_TICK_NS 5000000ull       /* pacing period */
#define WRITE_LOST_AFTER_NS 100000000ull /* a pause longer than this is not made up */

/* A page's hash, tied to its index so that a page restored at another address counts as
 * wrong. */
static uint64_t page_hash(const unsigned char *page, size_t index) {
    uint64_t h = checksum(page, PAGE) ^ ((uint64_t)index * 0xD6E8FEB86659FD93ull);
    h ^= h >> 32; /* splitmix64's finalizer */
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}

static uint64_t page_sum(const unsigned char *m, size_t n) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n / PAGE; i++)
        sum ^= page_hash(m + i * PAGE, i);
    return sum;
}

struct writer {
    pthread_t th;
    unsigned char *m;
    size_t pages;
    int text;
    double bytes_per_ns;
    uint64_t state;   /* its own xorshift: the fill's sequence is pattern.rs's */
    uint64_t sum;     /* page_sum of the memory, kept up to date at each page written */
    uint64_t written; /* bytes */
    uint64_t start_ns, end_ns, lost_ns;
    uint64_t max_gap_ns; /* the longest time between two of its wake-ups */
};

static atomic_int stop_writer;

static void write_page(struct writer *w) {
    size_t i = (size_t)(next_of(&w->state) % w->pages);
    unsigned char *page = w->m + i * PAGE;
    uint64_t before = page_hash(page, i);
    if (w->text)
        fill_text(page, PAGE, &w->state);
    else
        fill_random(page, PAGE, &w->state);
    w->sum ^= before ^ page_hash(page, i);
    w->written += PAGE;
}

/* Writes what is due every WRITE_TICK_NS: the pages the rate asks for since `base`, less those
 * written. A gap longer than WRITE_LOST_AFTER_NS (the process was frozen, moved, or starved)
 * restarts the schedule instead of a burst that would make up for it. */
static void *write_loop(void *arg) {
    struct writer *w = arg;
    uint64_t base = now_ns(), done = 0;
    w->start_ns = base;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    uint64_t last = base;
    while (!atomic_load_explicit(&stop_writer, memory_order_relaxed)) {
        uint64_t t = now_ns();
        if (t > last && t - last > w->max_gap_ns)
            w->max_gap_ns = t - last;
        last = t;
        uint64_t due = t > base ? (uint64_t)((double)(t - base) * w->bytes_per_ns) / PAGE : 0;
        if (t < base || (due > done && (double)(due - done) * PAGE >
                                             (double)WRITE_LOST_AFTER_NS * w->bytes_per_ns)) {
            /* Behind by more than the allowance: the time since the schedule's last page is
             * lost; start again from now. */
            uint64_t kept = (uint64_t)((double)(done * PAGE) / w->bytes_per_ns);
            if (t > base + kept)
                w->lost_ns += t - base - kept;
            base = t;
            done = 0;
            due = 0;
            clock_gettime(CLOCK_MONOTONIC, &next);
        }
        for (; done < due; done++)
            write_page(w);
        next.tv_nsec += (long)WRITE_TICK_NS;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    w->end_ns = now_ns();
    return NULL;
}

static void start_writer(struct writer *w) {
    int e = pthread_create(&w->th, NULL, write_loop, w);
    if (e != 0) {
        fprintf(stderr, "victim: pthread_create of the writer: %s\n", strerror(e));
        exit(2);
    }
}

static void stop_writing(struct writer *w) {
    atomic_store(&stop_writer, 1);
    pthread_join(w->th, NULL);
}

int main(int argc, char **argv) {
    /* Own stdin, stdout and stderr only: fds the bench's parent leaked are not ours to carry. */
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: victim SIZE_MIB random|text [THREADS] [write=MBPS]\n");
        return 2;
    }
    size_t n = (size_t)strtoull(argv[1], NULL, 10) << 20;
    int text = strcmp(argv[2], "text") == 0;
    unsigned long threads = 1;
    double write_mbps = 0;
    int bad = 0;
    for (int i = 3; i < argc; i++) {
        char *end;
        if (strncmp(argv[i], "write=", 6) == 0) {
            write_mbps = strtod(argv[i] + 6, &end);
            bad |= *end != '\0' || !(write_mbps > 0 && write_mbps <= 100000);
        } else if (i == 3) {
            threads = strtoul(argv[i], &end, 10);
            bad |= *end != '\0';
        } else {
            bad = 1;
        }
    }
    if (bad || n == 0 || (!text && strcmp(argv[2], "random") != 0) || threads == 0 ||
        threads > 100000) {
        fprintf(stderr, "victim: bad arguments\n");
        return 2;
    }
    unsigned char *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("victim: mmap");
        return 2;
    }
    uint64_t t0 = now_ns();
    if (text)
        fill_text(m, n, &rng);
    else
        fill_random(m, n, &rng);
    uint64_t t1 = now_ns();
    uint64_t sum = checksum(m, n);
    uint64_t t2 = now_ns();
    pid_t main_tid = tid_now();
    struct worker *ws = start_threads((unsigned)threads);
    struct writer w = {.m = m, .pages = n / PAGE, .text = text, .state = 0x2545F4914F6CDD1Dull};
    if (write_mbps > 0) {
        w.bytes_per_ns = write_mbps * 1e6 / 1e9;
        w.sum = page_sum(m, n);
        start_writer(&w);
    }
    char rate[64] = "";
    if (write_mbps > 0)
        snprintf(rate, sizeof rate, " write_mbps=%g", write_mbps);
    if (say("ready\nsum=%016llx fill_ns=%llu check_ns=%llu threads=%lu%s\n", (unsigned long long)sum,
            (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1), threads, rate) < 0)
        return 2;

    char c;
    ssize_t r;
    do
        r = read(0, &c, 1);
    while (r < 0 && errno == EINTR);

    if (write_mbps > 0)
        stop_writing(&w);
    uint64_t t3 = now_ns();
    uint64_t cpu0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    /* Writing, the memory's page sum is what must still hold; else its checksum. */
    if (write_mbps > 0)
        sum = w.sum;
    uint64_t again = write_mbps > 0 ? page_sum(m, n) : checksum(m, n);
    uint64_t t4 = now_ns();
    munmap(m, n);
    uint64_t t5 = now_ns();
    unsigned threads_ok = stop_threads(ws, (unsigned)threads, main_tid);
    uint64_t t6 = now_ns();
    uint64_t cpu1 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int ok = again == sum && threads_ok == threads;
    char wrote[128] = "";
    if (write_mbps > 0)
        snprintf(wrote, sizeof wrote, " written=%llu write_ns=%llu lost_ns=%llu max_gap_ns=%llu",
                 (unsigned long long)w.written, (unsigned long long)(w.end_ns - w.start_ns),
                 (unsigned long long)w.lost_ns, (unsigned long long)w.max_gap_ns);
    say("verified=%s check_ns=%llu unmap_ns=%llu threads=%lu threads_ok=%u join_ns=%llu "
        "cpu_ns=%llu%s\n",
        ok ? "ok" : "bad", (unsigned long long)(t4 - t3), (unsigned long long)(t5 - t4), threads,
        threads_ok, (unsigned long long)(t6 - t5), (unsigned long long)(cpu1 - cpu0), wrote);
    if (again != sum)
        fprintf(stderr, "victim: %s mismatch: %016llx before, %016llx after\n",
                write_mbps > 0 ? "page sum" : "checksum", (unsigned long long)sum,
                (unsigned long long)again);
    return ok ? 0 : 1;
}
