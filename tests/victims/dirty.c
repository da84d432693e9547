/*
 * Victim of the dirty-page tracker tests (tests/tests/dirty.rs): a process whose memory
 * changes in every way the tracker must notice, one command at a time.
 *
 * Usage: dirty FILE [MIB [FILLED]]. FILE (at least 1 MiB) is mapped private and written (copied
 * on write); the main anonymous area is MIB MiB (64 by default, at least 32), of which the first
 * FILLED MiB (all by default, at least 32) are filled.
 * Reads one command per line on stdin, does it, prints "done CMD" and waits for the next.
 * Four threads write on command ("w") or all the time ("go" until "halt").
 * Every written byte comes from a counter, so every write changes the page it lands on.
 * SIGRTMIN is counted ("signals" prints the count).
 */
#include "victim.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <signal.h>

#define PAGE 4096UL
#define MIB (1UL << 20)
#define THREADS 4

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static char *A;			/* anonymous (64 MiB unless told), filled */
static size_t A_LEN = 64 * MIB;
static char *T;			/* 8 MiB of transparent huge pages, filled */
static char *F;			/* 1 MiB private mapping of FILE */
static char *R;			/* 8 MiB anonymous, then 8 MiB held free for it (mremap) */
static char *MOVED;		/* where part of R moved to */
static char *NEW_ANON, *NEW_FILE, *NEW_THP;
static const char *file_path;
static atomic_uint stamp = 1;
static atomic_int running;	/* threads write continuously while set */
static atomic_int round_no;	/* bumped by "w": each thread writes once per bump */
static atomic_int written_rounds;

static atomic_int signals;	/* SIGRTMIN delivered */

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&signals, 1);
}

static uint64_t rng_state = 88172645463325252ULL;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rnd(void)
{
	pthread_mutex_lock(&rng_lock);
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	uint64_t r = rng_state;
	pthread_mutex_unlock(&rng_lock);
	return r;
}

/* Change the page at p: a new value at a random offset in it. */
static void touch(char *p)
{
	unsigned v = atomic_fetch_add(&stamp, 1);
	size_t off = (rnd() % (PAGE / 8)) * 8;
	*(volatile uint64_t *)(p + off) = ((uint64_t)v << 32) | v | 1;
}

static void fill(char *p, size_t len)
{
	for (size_t i = 0; i < len; i += PAGE)
		touch(p + i);
}

static void *map_aligned(size_t len, size_t align)
{
	char *p = mmap(NULL, len + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		_exit(90);
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if ((size_t)(a - p) < align)
		munmap(a + len, align - (size_t)(a - p));
	return a;
}

static void *worker(void *arg)
{
	(void)arg;
	int seen = 0;
	for (;;) {
		if (atomic_load(&running)) {
			touch(A + (rnd() % (A_LEN / PAGE)) * PAGE);
			continue;
		}
		int r = atomic_load(&round_no);
		if (r != seen) {
			for (int i = 0; i < 64; i++)
				touch(A + (rnd() % (A_LEN / PAGE)) * PAGE);
			seen = r;
			atomic_fetch_add(&written_rounds, 1);
			continue;
		}
		usleep(200);
	}
	return NULL;
}

static char *file_map(size_t len, char *at)
{
	int fd = open(file_path, O_RDONLY);
	if (fd < 0)
		_exit(91);
	char *p = mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | (at ? MAP_FIXED : 0), fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		_exit(92);
	return p;
}

static void command(const char *c)
{
	if (!strcmp(c, "w")) {
		int target = atomic_load(&written_rounds) + THREADS;
		atomic_fetch_add(&round_no, 1);
		while (atomic_load(&written_rounds) < target)
			usleep(100);
		/* The kernel writes too: read(2) into a page of A. */
		int p[2];
		if (pipe(p) == 0) {
			uint64_t v = ((uint64_t)atomic_fetch_add(&stamp, 1) << 8) | 0xab;
			write_all(p[1], (char *)&v, sizeof v);
			if (read(p[0], A + 5 * PAGE + 100, sizeof v) != sizeof v)
				_exit(93);
			close(p[0]);
			close(p[1]);
		}
	} else if (!strcmp(c, "go")) {
		atomic_store(&running, 1);
	} else if (!strcmp(c, "halt")) {
		atomic_store(&running, 0);
		/* Let every thread finish the write it is in. */
		usleep(20000);
	} else if (!strcmp(c, "remap")) {
		/* munmap then mmap anew at the same address; then MAP_FIXED over a live range. */
		munmap(A + 8 * MIB, MIB);
		char *n = mmap(A + 8 * MIB, MIB, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (n == MAP_FAILED)
			_exit(94);
		fill(n, MIB / 2);
		n = mmap(A + 12 * MIB, MIB, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (n == MAP_FAILED)
			_exit(94);
		touch(n + 3 * PAGE);
	} else if (!strcmp(c, "move")) {
		/* mremap to another address (the placeholder there is replaced), then write. */
		char *to = mmap(NULL, 2 * MIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		MOVED = mremap(R, 2 * MIB, 2 * MIB, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (MOVED == MAP_FAILED)
			_exit(95);
		touch(MOVED + PAGE);
	} else if (!strcmp(c, "movekeep")) {
		/* mremap with MREMAP_DONTUNMAP: the pages move, the old range stays mapped, empty. */
		char *to = mremap(A + 28 * MIB, MIB, MIB, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
		if (to == MAP_FAILED)
			_exit(95);
		touch(to + 2 * PAGE);
		touch(A + 28 * MIB + 3 * PAGE);
	} else if (!strcmp(c, "grow")) {
		/* mremap in place: what is left of R grows into the space held after it. */
		munmap(R + 8 * MIB, 8 * MIB);
		if (mremap(R + 2 * MIB, 6 * MIB, 14 * MIB, 0) == MAP_FAILED)
			_exit(96);
		touch(R + 9 * MIB);
		touch(R + 2 * MIB + PAGE);
	} else if (!strcmp(c, "dontneed")) {
		madvise(A + 16 * MIB, 16 * PAGE, MADV_DONTNEED);
	} else if (!strcmp(c, "readzero")) {
		for (int i = 0; i < 8; i++)
			(void)*(volatile char *)(A + 16 * MIB + i * PAGE);
	} else if (!strcmp(c, "writezero")) {
		touch(A + 16 * MIB + 2 * PAGE);
		touch(A + 16 * MIB + 12 * PAGE);
	} else if (!strcmp(c, "free")) {
		/* MADV_FREE; what MADV_PAGEOUT then discards reads as zero; a page written again
		 * after MADV_FREE keeps what was written. */
		madvise(A + 20 * MIB, 32 * PAGE, MADV_FREE);
		touch(A + 20 * MIB + 31 * PAGE);
		madvise(A + 20 * MIB, 32 * PAGE, MADV_PAGEOUT);
		madvise(A + 21 * MIB, 8 * PAGE, MADV_FREE);
	} else if (!strcmp(c, "prot")) {
		mprotect(A + 24 * MIB, 16 * PAGE, PROT_READ);
		mprotect(A + 24 * MIB + 4 * PAGE, 4 * PAGE, PROT_NONE);
		mprotect(A + 24 * MIB, 16 * PAGE, PROT_READ | PROT_WRITE);
		touch(A + 24 * MIB + 5 * PAGE);
		mprotect(A + 25 * MIB, 8 * PAGE, PROT_READ);
	} else if (!strcmp(c, "unprot")) {
		mprotect(A + 25 * MIB, 8 * PAGE, PROT_READ | PROT_WRITE);
		touch(A + 25 * MIB + PAGE);
	} else if (!strcmp(c, "fork")) {
		/* The child writes its copies (not ours), the parent writes its own. */
		pid_t child = fork();
		if (child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for (int i = 0; i < 32; i++)
				touch(A + i * 7 * PAGE);
			touch(T + PAGE);
			touch(F + PAGE);
			pause();
			_exit(0);
		}
		usleep(50000);
		touch(A + 3 * PAGE);
		touch(A + 40 * PAGE);
	} else if (!strcmp(c, "newmap")) {
		NEW_ANON = mmap(NULL, 4 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (NEW_ANON == MAP_FAILED)
			_exit(97);
		fill(NEW_ANON + MIB, MIB);
		NEW_FILE = file_map(MIB, NULL);
		touch(NEW_FILE + 2 * PAGE);
	} else if (!strcmp(c, "newwrite")) {
		touch(NEW_ANON + 3 * MIB);
		touch(NEW_FILE + 9 * PAGE);
	} else if (!strcmp(c, "thp")) {
		/* A write into a huge page; a whole huge page dropped (no page table left); a new
		 * huge-page area. */
		touch(T + 3 * PAGE);
		madvise(T + 2 * MIB, 2 * MIB, MADV_DONTNEED);
		NEW_THP = map_aligned(4 * MIB, 2 * MIB);
		madvise(NEW_THP, 4 * MIB, MADV_HUGEPAGE);
		fill(NEW_THP, 4 * MIB);
	} else if (!strcmp(c, "thpagain")) {
		touch(NEW_THP + MIB);
		touch(T + 2 * MIB + PAGE);
		madvise(NEW_THP + 2 * MIB, 2 * MIB, MADV_DONTNEED);
	} else if (!strcmp(c, "cow")) {
		touch(F + 5 * PAGE);
		touch(F + 6 * PAGE);
	} else if (!strcmp(c, "revert")) {
		/* Copies of file pages dropped: they read as the file again, with no write. */
		madvise(F, 8 * PAGE, MADV_DONTNEED);
	} else if (!strcmp(c, "signals")) {
		say("signals %d\n", atomic_load(&signals));
	} else if (!strcmp(c, "uffd")) {
		/* A userfaultfd of its own, kept open. */
		if (syscall(SYS_userfaultfd, 1 | O_CLOEXEC) < 0)
			_exit(99);
	} else if (!strcmp(c, "brk")) {
		char *old = sbrk(0);
		if (sbrk(2 * MIB) == (void *)-1)
			_exit(98);
		fill(old, 2 * MIB);
		if (sbrk(-(intptr_t)(512 * 1024)) == (void *)-1)
			_exit(98);
	} else {
		say("unknown command %s\n", c);
		return;
	}
	say("done %s\n", c);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	file_path = argv[1];
	if (argc > 2)
		A_LEN = strtoul(argv[2], NULL, 10) * MIB;
	size_t filled = argc > 3 ? strtoul(argv[3], NULL, 10) * MIB : A_LEN;
	if (A_LEN < 32 * MIB || filled < 32 * MIB || filled > A_LEN)
		return 2;
	A = mmap(NULL, A_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T = map_aligned(8 * MIB, 2 * MIB);
	R = map_aligned(16 * MIB, 2 * MIB);
	if (A == MAP_FAILED)
		return 3;
	/* The second half of R: a placeholder no other mapping can take. */
	if (mmap(R + 8 * MIB, 8 * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
	    MAP_FAILED)
		return 3;
	madvise(T, 8 * MIB, MADV_HUGEPAGE);
	fill(A, filled);
	fill(T, 8 * MIB);
	fill(R, 8 * MIB);
	F = file_map(MIB, NULL);
	touch(F);
	touch(F + 7 * PAGE);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGRTMIN, &sa, NULL);
	pthread_t t;
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t, NULL, worker, NULL) != 0)
			return 4;
	say("READY\n");
	char line[128];
	size_t n = 0;
	for (;;) {
		char ch;
		ssize_t r = read(0, &ch, 1);
		if (r <= 0)
			return 0;
		if (ch != '\n') {
			if (n < sizeof line - 1)
				line[n++] = ch;
			continue;
		}
		line[n] = 0;
		n = 0;
		if (!strcmp(line, "quit"))
			return 0;
		command(line);
	}
}
