/*
 * The working directory and the umask survive a restore.
 *
 * Before: mkdir DIR/work, chdir into it, umask(027), create before.txt there.
 * After: getcwd() is the same, umask is 027, a new file is created 0640 and a new directory
 * 0750, and before.txt is found by its relative path.
 *
 * usage: cwd_umask GO_FILE DIR
 */
#include "victim.h"
#include <limits.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
	usage_if(argc != 3, "cwd_umask GO_FILE DIR");
	char work[PATH_MAX];
	snprintf(work, sizeof work, "%s/work", argv[2]);
	mkdir(work, 0755);
	if (chdir(work) != 0) {
		perror("chdir");
		return 2;
	}
	char cwd_before[PATH_MAX];
	if (!getcwd(cwd_before, sizeof cwd_before)) {
		perror("getcwd");
		return 2;
	}
	umask(027);
	int fd = open("before.txt", O_WRONLY | O_CREAT | O_TRUNC, 0666);
	write_all(fd, "before\n", 7);
	close(fd);

	ready();
	wait_go(argv[1], 0);

	char cwd_after[PATH_MAX] = "";
	check(getcwd(cwd_after, sizeof cwd_after) != NULL && strcmp(cwd_before, cwd_after) == 0,
	      "getcwd unchanged", "before '%s' after '%s'", cwd_before, cwd_after);
	mode_t m = umask(027);
	check(m == 027, "umask unchanged", "umask %#o", (unsigned)m);

	fd = open("after.txt", O_WRONLY | O_CREAT | O_TRUNC, 0666);
	struct stat st;
	check(fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0640,
	      "new file mode 0640", "mode %#o", fd >= 0 ? (unsigned)(st.st_mode & 07777) : 0);
	if (fd >= 0)
		close(fd);
	check(mkdir("newdir", 0777) == 0 && stat("newdir", &st) == 0 && (st.st_mode & 07777) == 0750,
	      "new directory mode 0750", "mode %#o", (unsigned)(st.st_mode & 07777));

	char abs[PATH_MAX + 16];
	snprintf(abs, sizeof abs, "%s/after.txt", work);
	check(access(abs, F_OK) == 0, "new file created in the old cwd", "%s missing", abs);
	char buf[16] = { 0 };
	fd = open("before.txt", O_RDONLY);
	check(fd >= 0 && read(fd, buf, sizeof buf - 1) == 7 && strcmp(buf, "before\n") == 0,
	      "relative path to an old file", "fd %d content '%s'", fd, buf);
	finish();
}
