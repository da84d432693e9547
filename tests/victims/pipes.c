/*
 * A pipe the process holds both ends of, as restores got it wrong (issue 10 bugs): 1 MiB of
 * capacity with 300 KB waiting in it, the write end non-blocking and on a lower fd than the
 * read end (so it is restored first), and the read end opened a second time through /proc
 * (an open file of its own, non-blocking, while the first stays blocking).
 * After the restore: every byte is there, in order; each descriptor has its own flags; the
 * capacity is kept.
 *
 * usage: pipes GO_FILE
 */
#include "victim.h"

#define BYTES (300 * 1000)

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 13 + (i >> 9));
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "pipes GO_FILE");
	int p[2];
	if (pipe(p) != 0 || dup2(p[1], 20) != 20 || dup2(p[0], 21) != 21) {
		perror("pipe");
		return 2;
	}
	close(p[0]);
	close(p[1]);
	if (fcntl(20, F_SETPIPE_SZ, 1 << 20) < (1 << 20)) {
		perror("F_SETPIPE_SZ");
		return 2;
	}
	static unsigned char buf[BYTES];
	for (size_t i = 0; i < BYTES; i++)
		buf[i] = pattern(i);
	write_all(20, (const char *)buf, BYTES);
	fcntl(20, F_SETFL, O_NONBLOCK);
	int again = open("/proc/self/fd/21", O_RDONLY | O_NONBLOCK);
	if (again < 0 || dup2(again, 22) != 22) {
		perror("opening the read end again");
		return 2;
	}
	close(again);
	ready();
	wait_go(argv[1], 0);

	check(fcntl(20, F_GETFL) & O_NONBLOCK, "the write end is non-blocking", "flags %#x",
	      fcntl(20, F_GETFL));
	check(!(fcntl(21, F_GETFL) & O_NONBLOCK), "the first read end is blocking", "flags %#x",
	      fcntl(21, F_GETFL));
	check(fcntl(22, F_GETFL) & O_NONBLOCK, "the second read end is non-blocking", "flags %#x",
	      fcntl(22, F_GETFL));
	check(fcntl(21, F_GETPIPE_SZ) >= (1 << 20), "the pipe keeps its capacity", "%d bytes",
	      fcntl(21, F_GETPIPE_SZ));
	memset(buf, 0, sizeof buf);
	size_t got = 0;
	while (got < BYTES) {
		ssize_t n = read(21, buf + got, BYTES - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	size_t bad = 0;
	for (size_t i = 0; i < got; i++)
		bad += buf[i] != pattern(i);
	check(got == BYTES && bad == 0, "every byte that waited is read back, in order",
	      "%zu of %d bytes, %zu wrong", got, BYTES, bad);
	char c;
	ssize_t n = read(22, &c, 1);
	check(n < 0 && errno == EAGAIN, "then the pipe is empty", "read gave %zd (errno %d)", n,
	      errno);
	finish();
}
