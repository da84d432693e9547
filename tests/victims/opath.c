/*
 * O_PATH descriptors (issue 10): on a file, on a symlink itself (O_NOFOLLOW), on a directory
 * and on a named pipe. After the restore each still names its file: the symlink fd reads the
 * link, the directory fd opens files below it, the file fd is O_PATH and stats the file.
 *
 * usage: opath GO_FILE DIR
 */
#include "victim.h"
#include <sys/stat.h>

int main(int argc, char **argv)
{
	usage_if(argc != 3, "opath GO_FILE DIR");
	char file[4096], link[4096], fifo[4096];
	snprintf(file, sizeof file, "%s/target", argv[2]);
	snprintf(link, sizeof link, "%s/link", argv[2]);
	snprintf(fifo, sizeof fifo, "%s/fifo", argv[2]);
	int t = open(file, O_CREAT | O_WRONLY, 0600);
	if (t < 0 || write(t, "hello", 5) != 5 || symlink("target", link) != 0 ||
	    mkfifo(fifo, 0600) != 0) {
		perror("setting up");
		return 2;
	}
	close(t);
	int f = open(file, O_PATH);
	int l = open(link, O_PATH | O_NOFOLLOW);
	int d = open(argv[2], O_PATH | O_DIRECTORY);
	int p = open(fifo, O_PATH);
	if (f < 0 || l < 0 || d < 0 || p < 0) {
		perror("O_PATH");
		return 2;
	}
	ready();
	wait_go(argv[1], 0);

	check((fcntl(f, F_GETFL) & O_PATH) != 0, "the file descriptor is still O_PATH", "flags %#o",
	      fcntl(f, F_GETFL));
	struct stat s;
	check(fstat(f, &s) == 0 && S_ISREG(s.st_mode) && s.st_size == 5,
	      "it names the file", "mode %o size %lld", s.st_mode, (long long)s.st_size);
	check(fstatat(l, "", &s, AT_EMPTY_PATH) == 0 && S_ISLNK(s.st_mode),
	      "the symlink descriptor names the link itself", "mode %o", s.st_mode);
	char buf[64] = "";
	check(readlinkat(l, "", buf, sizeof buf - 1) == 6 && !strcmp(buf, "target"),
	      "and reads it", "'%s'", buf);
	int below = openat(d, "target", O_RDONLY);
	check(below >= 0 && read(below, buf, 5) == 5 && !memcmp(buf, "hello", 5),
	      "the directory descriptor opens files below it", "errno %d", errno);
	check(fstat(p, &s) == 0 && S_ISFIFO(s.st_mode), "the named pipe descriptor names it",
	      "mode %o", s.st_mode);
	finish();
}
