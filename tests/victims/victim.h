/*
 * Shared helpers for the victim programs (zdtm-style: each victim sets up some process state,
 * prints "READY", waits to be frozen, then checks its own state and prints PASS/FAIL lines).
 *
 * Conventions every victim follows:
 *   - output goes through say(), a single write(2) per line, so nothing sits in a stdio buffer;
 *   - "READY\n" is printed once the state is set up;
 *   - wait_go(path) waits (sleeping or spinning) until the file `path` exists; the test creates
 *     it after the checkpoint, so the checks run in the restored process;
 *   - finish() prints "ALL PASS" and exits 0, or "FAILED <n>" and exits 1;
 *   - no victim arms a timer unless that is what it is about (timers.c), so waits are bounded
 *     by iteration counts, not alarm(); threads only where they are the subject (threads.c,
 *     churn.c, timers.c, refuse.c).
 */
#ifndef MRUN_VICTIM_H
#define MRUN_VICTIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int victim_failures;

static __attribute__((unused)) void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(99);
		}
		buf += n;
		len -= (size_t)n;
	}
}

__attribute__((format(printf, 1, 2), unused)) static void say(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	write_all(1, buf, (size_t)n);
}

/* Records one check: "PASS what" or "FAIL what: details". */
__attribute__((format(printf, 3, 4), unused)) static void check(int ok, const char *what, const char *fmt, ...)
{
	if (ok) {
		say("PASS %s\n", what);
		return;
	}
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	say("FAIL %s: %s\n", what, buf);
	victim_failures++;
}

static __attribute__((unused)) void ready(void)
{
	say("READY\n");
}

static __attribute__((unused)) int file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static __attribute__((unused)) void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	/* EINTR (e.g. after a restore) just ends this nap early. */
	nanosleep(&ts, NULL);
}

/* Waits until `path` exists: sleeping in nanosleep (busy == 0) or spinning in user code. */
static __attribute__((unused)) void wait_go(const char *path, int busy)
{
	for (long i = 0; i < 9000; i++) { /* about 90 s */
		if (file_exists(path))
			return;
		if (busy) {
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			do {
				for (volatile int k = 0; k < 10000; k++)
					;
				clock_gettime(CLOCK_MONOTONIC, &b);
			} while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 10000000L);
		} else {
			nap_ms(10);
		}
	}
	say("FAIL wait_go: %s never appeared\n", path);
	_exit(3);
}

static __attribute__((unused)) void usage_if(int bad, const char *usage)
{
	if (bad) {
		fprintf(stderr, "usage: %s\n", usage);
		exit(2);
	}
}

static __attribute__((unused)) __attribute__((noreturn)) void finish(void)
{
	if (victim_failures == 0) {
		say("ALL PASS\n");
		exit(0);
	}
	say("FAILED %d\n", victim_failures);
	exit(1);
}

static __attribute__((unused)) int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

#endif
