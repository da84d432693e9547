/*
 * A named pipe (FIFO) whose ends a parent and its child hold (issue 10): 100 KB wait in it
 * at the checkpoint (its capacity raised to 256 KiB), the parent holds the read end (blocking)
 * and a write end (non-blocking), the child another write end. After the restore the child
 * writes a last line and exits, the parent closes its write end and reads everything back, in
 * order, then the end of the pipe.
 *
 * usage: fifo GO_FILE DIR
 */
#include "victim.h"
#include <sys/stat.h>
#include <sys/wait.h>

#define BYTES (100 * 1000)
#define LAST "the child's last line\n"

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 11 + (i >> 8));
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "fifo GO_FILE DIR");
	char path[4096];
	snprintf(path, sizeof path, "%s/fifo", argv[2]);
	if (mkfifo(path, 0600) != 0) {
		perror(path);
		return 2;
	}
	int r = open(path, O_RDONLY | O_NONBLOCK);
	int w = open(path, O_WRONLY | O_NONBLOCK);
	if (r < 0 || w < 0 || fcntl(w, F_SETPIPE_SZ, 256 << 10) < (256 << 10)) {
		perror("opening the fifo");
		return 2;
	}
	fcntl(r, F_SETFL, 0);
	static unsigned char buf[BYTES + sizeof LAST];
	for (size_t i = 0; i < BYTES; i++)
		buf[i] = pattern(i);
	write_all(w, (const char *)buf, BYTES);
	pid_t child = fork();
	if (child == 0) {
		close(r);
		int mine = open(path, O_WRONLY);
		close(w);
		wait_go(argv[1], 0);
		write_all(mine, LAST, strlen(LAST));
		_exit(0);
	}
	/* The child holds its own write end before the checkpoint. */
	for (int i = 0; i < 2000; i++) {
		char link[64], target[4096];
		int found = 0;
		for (int fd = 3; fd < 10 && !found; fd++) {
			snprintf(link, sizeof link, "/proc/%d/fd/%d", (int)child, fd);
			ssize_t n = readlink(link, target, sizeof target - 1);
			if (n > 0) {
				target[n] = 0;
				found = !strcmp(target, path);
			}
		}
		if (found)
			break;
		usleep(1000);
	}
	ready();
	wait_go(argv[1], 0);

	check(!(fcntl(r, F_GETFL) & O_NONBLOCK), "the read end is blocking", "flags %#x",
	      fcntl(r, F_GETFL));
	check(fcntl(w, F_GETFL) & O_NONBLOCK, "the parent's write end is non-blocking", "flags %#x",
	      fcntl(w, F_GETFL));
	int st = 0;
	check(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the child wrote its line and exited", "status %#x", st);
	close(w);
	memset(buf, 0, sizeof buf);
	size_t got = 0;
	for (;;) {
		ssize_t n = read(r, buf + got, sizeof buf - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	size_t bad = 0;
	for (size_t i = 0; i < BYTES && i < got; i++)
		bad += buf[i] != pattern(i);
	check(got == BYTES + strlen(LAST) && bad == 0 && !memcmp(buf + BYTES, LAST, strlen(LAST)),
	      "everything that waited and the child's line are read, in order, then the end",
	      "%zu bytes, %zu wrong", got, bad);
	unlink(path);
	finish();
}
