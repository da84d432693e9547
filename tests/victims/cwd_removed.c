/*
 * A working directory that was removed (issue 10): the process entered DIR/gone, which was
 * then removed. After the restore it is still in a removed directory: getcwd fails with
 * ENOENT, its /proc/self/cwd link reads "... (deleted)", nothing can be created in it, and
 * an absolute path still works.
 *
 * usage: cwd_removed GO_FILE DIR
 */
#include "victim.h"
#include <sys/stat.h>

int main(int argc, char **argv)
{
	usage_if(argc != 3, "cwd_removed GO_FILE DIR");
	char gone[4096];
	snprintf(gone, sizeof gone, "%s/gone", argv[2]);
	if (mkdir(gone, 0700) != 0 || chdir(gone) != 0 || rmdir(gone) != 0) {
		perror(gone);
		return 2;
	}
	ready();
	wait_go(argv[1], 0);

	char buf[4096];
	errno = 0;
	check(getcwd(buf, sizeof buf) == NULL && errno == ENOENT, "getcwd fails with ENOENT",
	      "got '%s' (errno %d)", errno ? "" : buf, errno);
	ssize_t n = readlink("/proc/self/cwd", buf, sizeof buf - 1);
	if (n > 0)
		buf[n] = 0;
	const char *tail = " (deleted)";
	check(n > 10 && !strcmp(buf + n - strlen(tail), tail), "the cwd link reads (deleted)",
	      "'%s'", n > 0 ? buf : "");
	check(open("new-file", O_CREAT | O_WRONLY, 0600) < 0 && errno == ENOENT,
	      "nothing can be created in it", "errno %d", errno);
	check(access(argv[1], F_OK) == 0, "absolute paths still work", "%s", strerror(errno));
	finish();
}
