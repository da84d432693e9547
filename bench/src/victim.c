/* mrun-bench victim: touch N MiB with known contents, say so, block on stdin, then check that
 * the memory still holds what was written.
 *
 *   victim SIZE_MIB random|text
 *
 * stdout, once filled:  "ready\nsum=<hex> fill_ns=<n> check_ns=<n>\n"
 * stdout, after stdin returns (EOF or data):  "verified=<ok|bad> check_ns=<n> unmap_ns=<n>\n"
 * Exit status 0 when the checksum matches, 1 when not, 2 on a usage or system error.
 *
 * The contents and the checksum must stay byte-for-byte equal to bench/src/pattern.rs: the
 * bench compares the checksum printed here with its own. */
#define _GNU_SOURCE
#include <errno.h>
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

static uint64_t next(void) { /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void fill_random(unsigned char *m, size_t n) {
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = next();
        memcpy(m + i, &r, 8); /* x86_64: little-endian, as pattern.rs writes it */
    }
}

/* Words from a 64-word list, four per random number, each followed by one separator:
 * '.', ',' or '\n' one time in 64 each, else ' '. zstd -1 makes about 3.4x of it. */
static void fill_text(unsigned char *m, size_t n) {
    char slot[64][16];
    size_t len[64];
    for (int i = 0; i < 64; i++) {
        len[i] = strlen(words[i]);
        memset(slot[i], ' ', 16);
        memcpy(slot[i], words[i], len[i]);
    }
    size_t p = 0;
    while (p + 64 <= n) {
        uint64_t r = next();
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
    char buf[256];
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

int main(int argc, char **argv) {
    /* Own stdin, stdout and stderr only: fds the bench's parent leaked are not ours to carry. */
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    if (argc != 3) {
        fprintf(stderr, "usage: victim SIZE_MIB random|text\n");
        return 2;
    }
    size_t n = (size_t)strtoull(argv[1], NULL, 10) << 20;
    int text = strcmp(argv[2], "text") == 0;
    if (n == 0 || (!text && strcmp(argv[2], "random") != 0)) {
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
        fill_text(m, n);
    else
        fill_random(m, n);
    uint64_t t1 = now_ns();
    uint64_t sum = checksum(m, n);
    uint64_t t2 = now_ns();
    if (say("ready\nsum=%016llx fill_ns=%llu check_ns=%llu\n", (unsigned long long)sum,
            (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1)) < 0)
        return 2;

    char c;
    ssize_t r;
    do
        r = read(0, &c, 1);
    while (r < 0 && errno == EINTR);

    uint64_t t3 = now_ns();
    uint64_t again = checksum(m, n);
    uint64_t t4 = now_ns();
    munmap(m, n);
    uint64_t t5 = now_ns();
    int ok = again == sum;
    say("verified=%s check_ns=%llu unmap_ns=%llu\n", ok ? "ok" : "bad",
        (unsigned long long)(t4 - t3), (unsigned long long)(t5 - t4));
    if (!ok)
        fprintf(stderr, "victim: checksum mismatch: %016llx before, %016llx after\n",
                (unsigned long long)sum, (unsigned long long)again);
    return ok ? 0 : 1;
}
