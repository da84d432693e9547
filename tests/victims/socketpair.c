/*
 * Unix socket pairs inside the job, with bytes and messages waiting in them at the checkpoint.
 * Every byte is a known pattern, so each side checks what it reads, byte for byte and message
 * for message, after the restore.
 *
 * usage: socketpair GO_FILE MODE
 * MODE tree: a parent and its child hold one end each of a stream, a seqpacket and a datagram
 *   pair. Before READY each has sent the other bytes (stream) and messages (seqpacket,
 *   datagram, one of them empty) that stay queued; the parent has shut its stream end down for
 *   writing and made its datagram end non-blocking. After the go file each reads and checks
 *   what waits for it, then the parent sends "ping" on the seqpacket and datagram pairs and the
 *   child answers "pong"; the parent reaps the child (exit 0 when all its checks passed).
 * MODE self: one process holds both ends of the three pairs, with bytes and messages queued in
 *   both directions, one end with SO_RCVTIMEO, one with a smaller SO_SNDBUF, one non-blocking
 *   and one shut down for writing; after the go file it checks all of it.
 * MODE closed: two children each write a result into their end of a stream and a seqpacket
 *   pair and exit (reaped before READY): the parent holds the only end left of each, with the
 *   results queued. After the go file it reads them all, then sees the end of the stream and
 *   of the seqpacket connection, and a send fails with EPIPE.
 */
#include "victim.h"
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#define BIG 65536

static const size_t seq_sizes[] = { 5, 1200, 60000, 17, 333 };
static const size_t dgram_sizes[] = { 5, 0, 1200, 60000, 17 };
#define NMSG 5

static unsigned char pattern(int seed, size_t i)
{
	return (unsigned char)(seed * 31 + i * 7 + (i >> 8));
}

static void die(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	exit(2);
}

static void send_stream(int fd, int seed, size_t len)
{
	char *buf = malloc(len);
	if (!buf)
		die("malloc");
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)pattern(seed, i);
	write_all(fd, buf, len);
	free(buf);
}

static void send_msgs(int fd, int seed, const size_t *sizes)
{
	static char buf[BIG];
	for (int k = 0; k < NMSG; k++) {
		for (size_t i = 0; i < sizes[k]; i++)
			buf[i] = (char)pattern(seed + k, i);
		if (send(fd, buf, sizes[k], 0) != (ssize_t)sizes[k])
			die("send");
	}
}

/* Reads `len` bytes of the stream and compares them with the pattern. */
static void check_stream(int fd, int seed, size_t len, const char *what)
{
	static char buf[BIG];
	size_t got = 0, bad = (size_t)-1;
	while (got < len) {
		size_t want = len - got < sizeof buf ? len - got : sizeof buf;
		ssize_t n = read(fd, buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (bad == (size_t)-1 && (unsigned char)buf[i] != pattern(seed, got + i))
				bad = got + i;
		got += (size_t)n;
	}
	check(got == len && bad == (size_t)-1, what, "%zu of %zu bytes, first wrong at %zd", got,
	      len, (ssize_t)bad);
}

/* Receives the NMSG messages, each with its size and contents. */
static void check_msgs(int fd, int seed, const size_t *sizes, const char *what)
{
	static char buf[BIG + 1];
	for (int k = 0; k < NMSG; k++) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		int same = n == (ssize_t)sizes[k];
		for (ssize_t i = 0; same && i < n; i++)
			same = (unsigned char)buf[i] == pattern(seed + k, (size_t)i);
		if (!same) {
			check(0, what, "message %d: %zd bytes, wanted %zu (errno %d)", k, n, sizes[k],
			      errno);
			return;
		}
	}
	check(1, what, "-");
}

static void check_nothing_more(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
	check(n < 0 && errno == EAGAIN, what, "recv gave %zd (errno %d)", n, errno);
}

static void check_eof(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
	check(n == 0, what, "recv gave %zd (errno %d)", n, errno);
}

static void check_epipe(int fd, const char *what)
{
	ssize_t n = send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	check(n < 0 && errno == EPIPE, what, "send gave %zd (errno %d)", n, errno);
}

static void check_nonblocking(int fd, const char *what)
{
	int fl = fcntl(fd, F_GETFL);
	check(fl >= 0 && (fl & O_NONBLOCK), what, "flags %#x", fl);
}

/* Waits (poll, up to 10 s) for a message on `fd` and checks it is `want`. */
static void check_word(int fd, const char *want, const char *what)
{
	char buf[16] = { 0 };
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n = -1;
	if (poll(&p, 1, 10000) == 1)
		n = recv(fd, buf, sizeof buf - 1, 0);
	check(n == (ssize_t)strlen(want) && !strcmp(buf, want), what, "got %zd '%s' (errno %d)", n,
	      buf, errno);
}

static void pairs(int st[2], int sq[2], int dg[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) != 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) != 0 ||
	    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) != 0)
		die("socketpair");
}

static int tree(const char *go)
{
	int st[2], sq[2], dg[2], sync[2];
	pairs(st, sq, dg);
	if (pipe(sync) != 0)
		die("pipe");
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(st[0]);
		close(sq[0]);
		close(dg[0]);
		close(sync[0]);
		send_stream(st[1], 2, 70000);
		send_msgs(sq[1], 20, seq_sizes);
		send_msgs(dg[1], 30, dgram_sizes);
		write_all(sync[1], "k", 1);
		wait_go(go, 0);
		check_stream(st[1], 1, 90000, "child: stream bytes from the parent");
		check_eof(st[1], "child: end of stream (the parent shut down writing)");
		check_msgs(sq[1], 10, seq_sizes, "child: seqpacket messages from the parent");
		check_msgs(dg[1], 40, dgram_sizes, "child: datagrams from the parent");
		check_word(sq[1], "ping", "child: seqpacket ping");
		check_word(dg[1], "ping", "child: datagram ping");
		if (send(sq[1], "pong", 4, 0) != 4 || send(dg[1], "pong", 4, 0) != 4)
			check(0, "child: pong sent", "errno %d", errno);
		_exit(victim_failures ? 1 : 0);
	}
	close(st[1]);
	close(sq[1]);
	close(dg[1]);
	close(sync[1]);
	send_stream(st[0], 1, 90000);
	if (shutdown(st[0], SHUT_WR) != 0)
		die("shutdown");
	send_msgs(sq[0], 10, seq_sizes);
	send_msgs(dg[0], 40, dgram_sizes);
	if (fcntl(dg[0], F_SETFL, O_NONBLOCK) != 0)
		die("fcntl");
	char k;
	if (read(sync[0], &k, 1) != 1)
		die("child never got ready");
	ready();
	wait_go(go, 0);
	check_nonblocking(dg[0], "parent: datagram end still non-blocking");
	check_stream(st[0], 2, 70000, "parent: stream bytes from the child");
	check_nothing_more(st[0], "parent: nothing more on the stream");
	check_epipe(st[0], "parent: stream end still shut down for writing");
	check_msgs(sq[0], 20, seq_sizes, "parent: seqpacket messages from the child");
	check_nothing_more(sq[0], "parent: no more seqpacket messages");
	check_msgs(dg[0], 30, dgram_sizes, "parent: datagrams from the child");
	check_nothing_more(dg[0], "parent: no more datagrams");
	if (send(sq[0], "ping", 4, 0) != 4 || send(dg[0], "ping", 4, 0) != 4)
		check(0, "parent: ping sent", "errno %d", errno);
	check_word(sq[0], "pong", "parent: seqpacket pong");
	check_word(dg[0], "pong", "parent: datagram pong");
	int status = 0;
	pid_t w = waitpid(child, &status, 0);
	check(w == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the child passed its checks and exited 0", "waitpid %d status %#x", (int)w, status);
	finish();
}

static long timeout_us(int fd, int opt)
{
	struct timeval tv = { 0, 0 };
	socklen_t len = sizeof tv;
	if (getsockopt(fd, SOL_SOCKET, opt, &tv, &len) != 0)
		return -1;
	return tv.tv_sec * 1000000L + tv.tv_usec;
}

static int int_option(int fd, int opt)
{
	int v = -1;
	socklen_t len = sizeof v;
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0)
		return -1;
	return v;
}

static int self(const char *go)
{
	int st[2], sq[2], dg[2];
	pairs(st, sq, dg);
	struct timeval tv = { 1, 500000 };
	int small = 100000;
	if (setsockopt(st[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
	    setsockopt(sq[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) != 0)
		die("setsockopt");
	long rcvtimeo = timeout_us(st[1], SO_RCVTIMEO);
	int sndbuf = int_option(sq[0], SO_SNDBUF);
	send_stream(st[0], 1, 50000);
	send_stream(st[1], 2, 30000);
	if (shutdown(st[0], SHUT_WR) != 0)
		die("shutdown");
	send_msgs(sq[0], 10, seq_sizes);
	send_msgs(sq[1], 20, seq_sizes);
	send_msgs(dg[0], 30, dgram_sizes);
	send_msgs(dg[1], 40, dgram_sizes);
	if (fcntl(sq[1], F_SETFL, O_NONBLOCK) != 0)
		die("fcntl");
	ready();
	wait_go(go, 0);
	check(timeout_us(st[1], SO_RCVTIMEO) == rcvtimeo, "SO_RCVTIMEO kept", "%ld us, was %ld",
	      timeout_us(st[1], SO_RCVTIMEO), rcvtimeo);
	check(int_option(sq[0], SO_SNDBUF) == sndbuf, "SO_SNDBUF kept", "%d, was %d",
	      int_option(sq[0], SO_SNDBUF), sndbuf);
	check_nonblocking(sq[1], "seqpacket end still non-blocking");
	check_stream(st[1], 1, 50000, "stream bytes 0 -> 1");
	check_eof(st[1], "end of stream 0 -> 1 (shut down for writing)");
	check_stream(st[0], 2, 30000, "stream bytes 1 -> 0");
	check_nothing_more(st[0], "nothing more on stream 1 -> 0");
	check_epipe(st[0], "stream end 0 still shut down for writing");
	check_msgs(sq[1], 10, seq_sizes, "seqpacket messages 0 -> 1");
	check_msgs(sq[0], 20, seq_sizes, "seqpacket messages 1 -> 0");
	check_msgs(dg[1], 30, dgram_sizes, "datagrams 0 -> 1");
	check_msgs(dg[0], 40, dgram_sizes, "datagrams 1 -> 0");
	for (int i = 0; i < 2; i++) {
		check_nothing_more(sq[i], "no more seqpacket messages");
		check_nothing_more(dg[i], "no more datagrams");
	}
	if (send(st[1], "ping", 4, 0) != 4 || send(sq[0], "ping", 4, 0) != 4 ||
	    send(dg[1], "ping", 4, 0) != 4)
		check(0, "ping sent", "errno %d", errno);
	check_word(st[0], "ping", "stream still carries data");
	check_word(sq[1], "ping", "seqpacket pair still carries messages");
	check_word(dg[0], "ping", "datagram pair still carries messages");
	finish();
}

static int closed(const char *go)
{
	int st[2], sq[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) != 0 ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) != 0)
		die("socketpair");
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		if (kids[k] < 0)
			die("fork");
		if (kids[k] == 0) {
			close(st[0]);
			close(sq[0]);
			if (k == 0)
				send_stream(st[1], 3, 100000);
			else
				send_msgs(sq[1], 40, seq_sizes);
			_exit(0);
		}
	}
	close(st[1]);
	close(sq[1]);
	for (int k = 0; k < 2; k++) {
		int status = 0;
		if (waitpid(kids[k], &status, 0) != kids[k] || status != 0)
			die("a child that writes its result");
	}
	ready();
	wait_go(go, 0);
	check_stream(st[0], 3, 100000, "the stream result of the exited child");
	check_eof(st[0], "then the stream ends");
	check_epipe(st[0], "a send to the closed peer fails with EPIPE");
	check_msgs(sq[0], 40, seq_sizes, "the seqpacket results of the exited child");
	check_eof(sq[0], "then the seqpacket connection ends");
	finish();
	return 0;
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "socketpair GO_FILE tree|self");
	if (!strcmp(argv[2], "tree"))
		return tree(argv[1]);
	if (!strcmp(argv[2], "self"))
		return self(argv[1]);
	if (!strcmp(argv[2], "closed"))
		return closed(argv[1]);
	usage_if(1, "socketpair GO_FILE tree|self");
	return 2;
}
