/*
 * Listening unix sockets inside the job, and the connections they accepted (issue 10).
 *
 * usage: listener GO_FILE DIR
 * In DIR the parent listens on DIR/srv.sock (stream, bound by its absolute path, the file's mode
 * set to 0600), on an abstract seqpacket name (backlog 3, non-blocking) and on rel.sock (stream,
 * bound by a name relative to DIR, its working directory). Its child connects to the first two;
 * the parent accepts both, and connects to srv.sock itself and accepts that too. At READY bytes
 * and messages wait both ways on each connection. After the go file:
 *   - each side reads what waits for it, byte for byte and message for message;
 *   - an accepted end still has the listener's name, and the child's ends name it as their
 *     peer;
 *   - new connections reach each listener by its name (path, abstract, relative) and carry data;
 *   - the socket file is still a socket with mode 0600;
 *   - the abstract listener is still non-blocking and takes backlog + 1 connections, no more.
 * The parent reaps the child (its checks count) and prints ALL PASS or FAILED n.
 */
#include "victim.h"
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define BACKLOG 3

static struct sockaddr_un srv_addr, abs_addr, rel_addr;
static socklen_t abs_len;

static void die(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	exit(2);
}

static int listen_on(int type, const struct sockaddr_un *a, socklen_t len, int backlog)
{
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0 || bind(fd, (const struct sockaddr *)a, len) != 0 || listen(fd, backlog) != 0)
		die("listen");
	return fd;
}

static int connect_to(int type, const struct sockaddr_un *a, socklen_t len, int flags)
{
	int fd = socket(AF_UNIX, type | flags, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)a, len) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int accept_blocking(int listener)
{
	for (int i = 0; i < 1000; i++) {
		int fd = accept(listener, NULL, NULL);
		if (fd >= 0 || errno != EAGAIN)
			return fd;
		nap_ms(2);
	}
	return -1;
}

static void send_text(int fd, const char *text)
{
	if (send(fd, text, strlen(text), 0) != (ssize_t)strlen(text))
		die("send");
}

/* Reads exactly `want` (one message on a seqpacket socket) without blocking and compares. */
static void expect_text(int fd, const char *want, const char *what)
{
	char buf[256] = { 0 };
	ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
	check(n == (ssize_t)strlen(want) && !strcmp(buf, want), what, "got %zd '%s' (errno %d)", n,
	      n > 0 ? buf : "", errno);
}

static int round_trip(int a, int b)
{
	char buf[8] = { 0 };
	return write(a, "ping", 4) == 4 && read(b, buf, 4) == 4 && !memcmp(buf, "ping", 4);
}

/* Whether `got` (of length `len`) is the address `want` of length `want_len`. */
static int same_addr(const struct sockaddr_un *got, socklen_t len, const struct sockaddr_un *want,
		     socklen_t want_len)
{
	if (want->sun_path[0] == 0)
		return len == want_len && !memcmp(got->sun_path, want->sun_path,
						  want_len - offsetof(struct sockaddr_un, sun_path));
	return !strcmp(got->sun_path, want->sun_path);
}

static void check_name(int fd, int peer, const struct sockaddr_un *want, socklen_t want_len,
		       const char *what)
{
	struct sockaddr_un got = { 0 };
	socklen_t len = sizeof got;
	int r = peer ? getpeername(fd, (struct sockaddr *)&got, &len) :
		       getsockname(fd, (struct sockaddr *)&got, &len);
	check(r == 0 && same_addr(&got, len, want, want_len), what, "r %d len %u path '%s'", r,
	      (unsigned)len, got.sun_path[0] ? got.sun_path : got.sun_path + 1);
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "listener GO_FILE DIR");
	if (chdir(argv[2]) != 0)
		die("chdir DIR");
	srv_addr.sun_family = abs_addr.sun_family = rel_addr.sun_family = AF_UNIX;
	snprintf(srv_addr.sun_path, sizeof srv_addr.sun_path, "%s/srv.sock", argv[2]);
	strcpy(rel_addr.sun_path, "rel.sock");
	int n = snprintf(abs_addr.sun_path + 1, sizeof abs_addr.sun_path - 1, "mrun-listener-%d",
			 (int)getpid());
	abs_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);

	int srv = listen_on(SOCK_STREAM, &srv_addr, sizeof srv_addr, 8);
	if (chmod(srv_addr.sun_path, 0600) != 0)
		die("chmod srv.sock");
	int abs = listen_on(SOCK_SEQPACKET, &abs_addr, abs_len, BACKLOG);
	if (fcntl(abs, F_SETFL, O_NONBLOCK) != 0)
		die("O_NONBLOCK");
	int rel = listen_on(SOCK_STREAM, &rel_addr, sizeof rel_addr, 4);

	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(srv);
		close(abs);
		close(rel);
		int cs = connect_to(SOCK_STREAM, &srv_addr, sizeof srv_addr, 0);
		int ca = connect_to(SOCK_SEQPACKET, &abs_addr, abs_len, 0);
		if (cs < 0 || ca < 0)
			die("child connect");
		send_text(cs, "child to server, stream");
		send_text(ca, "child to server, message one");
		send_text(ca, "child to server, message two");
		wait_go(argv[1], 0);
		expect_text(cs, "server to child, stream", "the child's stream queue");
		expect_text(ca, "server to child, message", "the child's seqpacket queue");
		check_name(cs, 1, &srv_addr, sizeof srv_addr, "the child's stream names its server");
		check_name(ca, 1, &abs_addr, abs_len, "the child's seqpacket names its server");
		_exit(victim_failures ? 1 : 0);
	}
	int as = accept_blocking(srv);
	int aa = accept_blocking(abs);
	int self = connect_to(SOCK_STREAM, &srv_addr, sizeof srv_addr, 0);
	int aself = self >= 0 ? accept_blocking(srv) : -1;
	if (as < 0 || aa < 0 || aself < 0)
		die("accept");
	send_text(as, "server to child, stream");
	send_text(aa, "server to child, message");
	send_text(self, "to myself");
	send_text(aself, "back to myself");
	/* Both of the child's sends wait for the parent before READY. */
	for (int i = 0; i < 2000; i++) {
		int queued = 0;
		if (ioctl(aa, FIONREAD, &queued) == 0 && queued > 0 &&
		    recv(as, (char[1]){ 0 }, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
			break;
		nap_ms(1);
	}
	ready();
	wait_go(argv[1], 0);

	expect_text(as, "child to server, stream", "the parent's stream queue");
	expect_text(aa, "child to server, message one", "the first seqpacket message");
	expect_text(aa, "child to server, message two", "the second seqpacket message");
	expect_text(aself, "to myself", "the parent's own connection, accepted end");
	expect_text(self, "back to myself", "the parent's own connection, client end");
	check_name(as, 0, &srv_addr, sizeof srv_addr, "an accepted stream keeps the listener's name");
	check_name(aa, 0, &abs_addr, abs_len, "an accepted seqpacket keeps the abstract name");
	check_name(self, 1, &srv_addr, sizeof srv_addr, "the parent's client names its server");
	check(round_trip(self, aself) && round_trip(aself, self), "the parent's own connection",
	      "errno %d", errno);

	struct stat st;
	check(stat(srv_addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode) &&
		      (st.st_mode & 07777) == 0600,
	      "srv.sock is a socket of mode 0600", "mode %o", (unsigned)st.st_mode);
	check_name(srv, 0, &srv_addr, sizeof srv_addr, "the listener keeps its name");

	int fresh = connect_to(SOCK_STREAM, &srv_addr, sizeof srv_addr, 0);
	int fresh_acc = fresh >= 0 ? accept_blocking(srv) : -1;
	check(fresh_acc >= 0 && round_trip(fresh, fresh_acc), "a new connection by path", "errno %d",
	      errno);
	int frel = connect_to(SOCK_STREAM, &rel_addr, sizeof rel_addr, 0);
	int frel_acc = frel >= 0 ? accept_blocking(rel) : -1;
	check(frel_acc >= 0 && round_trip(frel, frel_acc), "a new connection by relative path",
	      "errno %d", errno);

	check(accept(abs, NULL, NULL) < 0 && errno == EAGAIN, "the abstract listener is non-blocking",
	      "errno %d", errno);
	int taken = 0, last_errno = 0;
	for (int i = 0; i < BACKLOG + 3; i++) {
		int fd = connect_to(SOCK_SEQPACKET, &abs_addr, abs_len, SOCK_NONBLOCK);
		if (fd < 0) {
			last_errno = errno;
			break;
		}
		taken++;
	}
	check(taken == BACKLOG + 1 && last_errno == EAGAIN,
	      "the abstract listener takes backlog + 1 connections", "took %d, then errno %d", taken,
	      last_errno);
	int fabs = accept(abs, NULL, NULL);
	char msg[8] = { 0 };
	check(fabs >= 0 && recv(fabs, msg, sizeof msg, MSG_DONTWAIT) < 0 && errno == EAGAIN,
	      "a new connection by abstract name", "fd %d errno %d", fabs, errno);

	int status = 0;
	check(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "the child's checks", "status 0x%x", status);
	finish();
}
