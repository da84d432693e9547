/*
 * Regular files are reopened with the same fd numbers, flags and offsets.
 *
 * Before (in DIR): append.log opened O_WRONLY|O_APPEND (one line written) and dup'ed to fd 42;
 * input.txt opened O_RDONLY|O_CLOEXEC and read 10 bytes into; data.bin opened O_RDWR, 100 bytes
 * written then lseek'd to 37.
 * After: the flags and offsets match; a write after lseek(0) on the O_APPEND fd still lands at
 * the end; reads continue where they stopped; the set of open fds is the same as before.
 *
 * usage: files GO_FILE DIR
 */
#include "victim.h"
#include <dirent.h>
#include <sys/stat.h>

static const char input_text[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

static int fd_list(int *out, int max)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		if (fd == dirfd(d))
			continue;
		if (n < max)
			out[n++] = fd;
	}
	if (d)
		closedir(d);
	for (int i = 0; i < n; i++) /* sort */
		for (int j = i + 1; j < n; j++)
			if (out[j] < out[i]) {
				int t = out[i];
				out[i] = out[j];
				out[j] = t;
			}
	return n;
}

static void join(char *buf, size_t len, const int *fds, int n)
{
	buf[0] = 0;
	for (int i = 0; i < n; i++)
		snprintf(buf + strlen(buf), len - strlen(buf), "%s%d", i ? "," : "", fds[i]);
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "files GO_FILE DIR");
	char path_log[4096], path_in[4096], path_bin[4096];
	snprintf(path_log, sizeof path_log, "%s/append.log", argv[2]);
	snprintf(path_in, sizeof path_in, "%s/input.txt", argv[2]);
	snprintf(path_bin, sizeof path_bin, "%s/data.bin", argv[2]);

	int setup = open(path_in, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	write_all(setup, input_text, strlen(input_text));
	close(setup);

	int log = open(path_log, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
	write_all(log, "first\n", 6);
	if (dup2(log, 42) != 42) {
		perror("dup2");
		return 2;
	}
	int in = open(path_in, O_RDONLY | O_CLOEXEC);
	char buf[64] = { 0 };
	if (read(in, buf, 10) != 10 || memcmp(buf, input_text, 10) != 0) {
		say("FAIL setup read\n");
		return 2;
	}
	int bin = open(path_bin, O_RDWR | O_CREAT | O_TRUNC, 0600);
	unsigned char bytes[100];
	for (int i = 0; i < 100; i++)
		bytes[i] = (unsigned char)(i * 3);
	write_all(bin, (const char *)bytes, 100);
	lseek(bin, 37, SEEK_SET);

	int fds_before[64], fds_after[64];
	int n_before = fd_list(fds_before, 64);
	struct stat st_log;
	fstat(log, &st_log);

	ready();
	wait_go(argv[1], 0);

	int n_after = fd_list(fds_after, 64);
	char a[512], b[512];
	join(a, sizeof a, fds_before, n_before);
	join(b, sizeof b, fds_after, n_after);
	check(strcmp(a, b) == 0, "same open fds", "before [%s] after [%s]", a, b);

	int fl = fcntl(log, F_GETFL);
	check(fl >= 0 && (fl & O_APPEND) && (fl & O_ACCMODE) == O_WRONLY, "append fd flags",
	      "flags %#x", fl);
	check(fcntl(log, F_GETFD) == 0, "append fd not cloexec", "F_GETFD %d", fcntl(log, F_GETFD));
	struct stat st42;
	check(fstat(42, &st42) == 0 && st42.st_ino == st_log.st_ino && st42.st_dev == st_log.st_dev,
	      "fd 42 is the same file", "fstat(42) differs");
	fl = fcntl(in, F_GETFL);
	check(fl >= 0 && (fl & O_ACCMODE) == O_RDONLY, "input fd read-only", "flags %#x", fl);
	check(fcntl(in, F_GETFD) == FD_CLOEXEC, "input fd cloexec", "F_GETFD %d",
	      fcntl(in, F_GETFD));
	fl = fcntl(bin, F_GETFL);
	check(fl >= 0 && (fl & O_ACCMODE) == O_RDWR, "data fd read-write", "flags %#x", fl);

	check(lseek(in, 0, SEEK_CUR) == 10, "input offset", "at %lld",
	      (long long)lseek(in, 0, SEEK_CUR));
	memset(buf, 0, sizeof buf);
	ssize_t got = read(in, buf, 10);
	check(got == 10 && memcmp(buf, input_text + 10, 10) == 0, "read continues at the offset",
	      "read %zd bytes: '%s'", got, buf);

	check(lseek(bin, 0, SEEK_CUR) == 37, "read-write offset", "at %lld",
	      (long long)lseek(bin, 0, SEEK_CUR));
	unsigned char one = 0;
	check(read(bin, &one, 1) == 1 && one == bytes[37], "read-write reads at its offset",
	      "byte %u", one);
	unsigned char w = 0xee;
	check(write(bin, &w, 1) == 1 && pread(bin, &one, 1, 38) == 1 && one == 0xee,
	      "read-write writes at its offset", "byte %u", one);

	lseek(log, 0, SEEK_SET);
	write_all(log, "second\n", 7);
	write_all(42, "third\n", 6);
	char content[256] = { 0 };
	int rd = open(path_log, O_RDONLY);
	ssize_t cl = read(rd, content, sizeof content - 1);
	close(rd);
	check(cl == 19 && strcmp(content, "first\nsecond\nthird\n") == 0, "O_APPEND writes land at the end",
	      "file is '%s'", content);
	finish();
}
