/*
 * Files with no name left, held open (issue 10): a deleted file (opened twice: two open files
 * of one inode, at different offsets), a tmpfile(3), and two memfds, one sealed against
 * growing and shrinking, one made without MFD_ALLOW_SEALING. After the restore each holds its
 * bytes, size and mode, each open file its offset, the seals hold, the two open files of the
 * deleted file are still one file, and the links still read "(deleted)" and "/memfd:NAME".
 *
 * usage: unlinked GO_FILE DIR
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define BIG (100 * 1000)

static unsigned char pattern(int seed, size_t i)
{
	return (unsigned char)(seed * 17 + i * 5 + (i >> 10));
}

static void fill(int fd, int seed, size_t len)
{
	static char buf[BIG];
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)pattern(seed, i);
	write_all(fd, buf, len);
}

static void check_contents(int fd, int seed, size_t len, const char *what)
{
	static unsigned char buf[BIG + 1];
	ssize_t n = pread(fd, buf, sizeof buf, 0);
	size_t bad = 0;
	for (ssize_t i = 0; i < n; i++)
		bad += buf[i] != pattern(seed, (size_t)i);
	check(n == (ssize_t)len && bad == 0, what, "%zd bytes of %zu, %zu wrong", n, len, bad);
}

static void check_offset(int fd, off_t want, const char *what)
{
	off_t at = lseek(fd, 0, SEEK_CUR);
	check(at == want, what, "at %lld, wanted %lld", (long long)at, (long long)want);
}

static void check_link(int fd, const char *want_start, const char *want_end, const char *what)
{
	char path[64], link[4096] = "";
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n > 0)
		link[n] = 0;
	size_t l = strlen(link), e = strlen(want_end);
	check(!strncmp(link, want_start, strlen(want_start)) && l >= e && !strcmp(link + l - e, want_end),
	      what, "'%s'", link);
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "unlinked GO_FILE DIR");
	char path[4096];
	snprintf(path, sizeof path, "%s/scratch.dat", argv[2]);
	int del = open(path, O_CREAT | O_EXCL | O_RDWR, 0640);
	if (del < 0) {
		perror(path);
		return 2;
	}
	fchmod(del, 0640);
	fill(del, 1, BIG);
	unlink(path);
	lseek(del, 5000, SEEK_SET);
	char self[64];
	snprintf(self, sizeof self, "/proc/self/fd/%d", del);
	int del2 = open(self, O_RDONLY);
	lseek(del2, 77, SEEK_SET);

	FILE *tmp = tmpfile();
	if (!tmp || del2 < 0) {
		perror("tmpfile");
		return 2;
	}
	int tfd = fileno(tmp);
	fill(tfd, 2, 3000);

	int sealed = memfd_create("victim-sealed", MFD_ALLOW_SEALING);
	int plain = memfd_create("victim-plain", 0);
	if (sealed < 0 || plain < 0) {
		perror("memfd_create");
		return 2;
	}
	fill(sealed, 3, 10000);
	fcntl(sealed, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK);
	lseek(sealed, 123, SEEK_SET);
	fill(plain, 4, 4096);
	ready();
	wait_go(argv[1], 0);

	check_contents(del, 1, BIG, "the deleted file holds its bytes");
	check_offset(del, 5000, "the deleted file's first open file keeps its offset");
	check_offset(del2, 77, "its second open file keeps its own offset");
	struct stat a, b;
	check(fstat(del, &a) == 0 && fstat(del2, &b) == 0 && a.st_ino == b.st_ino &&
		      a.st_dev == b.st_dev,
	      "both open files are of one file", "inodes %lu %lu", (unsigned long)a.st_ino,
	      (unsigned long)b.st_ino);
	check(a.st_nlink == 0 && (a.st_mode & 07777) == 0640 && a.st_size == BIG,
	      "the deleted file has no link, its mode and its size", "nlink %lu mode %o size %lld",
	      (unsigned long)a.st_nlink, a.st_mode & 07777, (long long)a.st_size);
	check((fcntl(del2, F_GETFL) & O_ACCMODE) == O_RDONLY, "the second open file is read-only",
	      "flags %#x", fcntl(del2, F_GETFL));
	pwrite(del, "XYZ", 3, 10);
	char seen[4] = "";
	pread(del2, seen, 3, 10);
	check(!memcmp(seen, "XYZ", 3), "a write through one open file shows through the other",
	      "'%.3s'", seen);
	check_link(del, path, " (deleted)", "the deleted file's link reads its path (deleted)");
	check_contents(tfd, 2, 3000, "the tmpfile holds its bytes");
	check_offset(tfd, 3000, "the tmpfile keeps its offset");
	check_contents(sealed, 3, 10000, "the sealed memfd holds its bytes");
	check_offset(sealed, 123, "the sealed memfd keeps its offset");
	int seals = fcntl(sealed, F_GET_SEALS);
	check(seals == (F_SEAL_GROW | F_SEAL_SHRINK), "the memfd keeps its seals", "%#x", seals);
	check(ftruncate(sealed, 20000) != 0 && errno == EPERM, "the seal against growing holds",
	      "errno %d", errno);
	check_link(sealed, "/memfd:victim-sealed", " (deleted)", "the memfd keeps its name");
	check_contents(plain, 4, 4096, "the other memfd holds its bytes");
	check(fcntl(plain, F_GET_SEALS) == F_SEAL_SEAL,
	      "a memfd made without sealing still cannot be sealed", "%#x",
	      fcntl(plain, F_GET_SEALS));
	finish();
}
