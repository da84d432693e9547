/*
 * Miscellaneous per-process state survives a restore: resource limits, the thread name
 * (comm), /proc/self/exe, and what the kernel shows of the command line, environment and
 * auxiliary vector (set on restore with PR_SET_MM_MAP).
 *
 * usage: misc GO_FILE
 */
#include "victim.h"
#include <limits.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/resource.h>

static size_t slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	size_t got = 0;
	if (fd < 0)
		return 0;
	for (;;) {
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return got;
}

static char cmd_before[8192], cmd_after[8192], env_before[65536], env_after[65536];
static char auxv_before[4096], auxv_after[4096];

int main(int argc, char **argv)
{
	usage_if(argc != 2, "misc GO_FILE");
	struct rlimit nofile = { 100, 200 }, core = { 0, 0 }, stack_before;
	setrlimit(RLIMIT_NOFILE, &nofile);
	setrlimit(RLIMIT_CORE, &core);
	getrlimit(RLIMIT_STACK, &stack_before);
	prctl(PR_SET_NAME, "mrun-misc");
	setenv("MRUN_VICTIM_MARK", "set-before-checkpoint", 1);
	char exe_before[PATH_MAX] = "", exe_after[PATH_MAX] = "";
	if (readlink("/proc/self/exe", exe_before, sizeof exe_before - 1) < 0) {
		perror("readlink");
		return 2;
	}
	size_t cmd_len = slurp("/proc/self/cmdline", cmd_before, sizeof cmd_before);
	size_t env_len = slurp("/proc/self/environ", env_before, sizeof env_before);
	size_t auxv_len = slurp("/proc/self/auxv", auxv_before, sizeof auxv_before);
	unsigned long pagesz = getauxval(AT_PAGESZ);
	unsigned long random_at = getauxval(AT_RANDOM);

	ready();
	wait_go(argv[1], 0);

	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	check(r.rlim_cur == 100 && r.rlim_max == 200, "RLIMIT_NOFILE", "%llu/%llu",
	      (unsigned long long)r.rlim_cur, (unsigned long long)r.rlim_max);
	getrlimit(RLIMIT_CORE, &r);
	check(r.rlim_cur == 0 && r.rlim_max == 0, "RLIMIT_CORE", "%llu/%llu",
	      (unsigned long long)r.rlim_cur, (unsigned long long)r.rlim_max);
	getrlimit(RLIMIT_STACK, &r);
	check(r.rlim_cur == stack_before.rlim_cur && r.rlim_max == stack_before.rlim_max,
	      "RLIMIT_STACK", "%llu/%llu", (unsigned long long)r.rlim_cur,
	      (unsigned long long)r.rlim_max);

	char name[32] = "";
	prctl(PR_GET_NAME, name);
	check(strcmp(name, "mrun-misc") == 0, "comm", "'%s'", name);
	readlink("/proc/self/exe", exe_after, sizeof exe_after - 1);
	check(strcmp(exe_before, exe_after) == 0, "/proc/self/exe", "before '%s' after '%s'",
	      exe_before, exe_after);
	size_t n = slurp("/proc/self/cmdline", cmd_after, sizeof cmd_after);
	check(n == cmd_len && memcmp(cmd_before, cmd_after, n) == 0, "/proc/self/cmdline",
	      "%zu bytes, was %zu", n, cmd_len);
	n = slurp("/proc/self/environ", env_after, sizeof env_after);
	check(n == env_len && memcmp(env_before, env_after, n) == 0, "/proc/self/environ",
	      "%zu bytes, was %zu", n, env_len);
	n = slurp("/proc/self/auxv", auxv_after, sizeof auxv_after);
	check(n == auxv_len && memcmp(auxv_before, auxv_after, n) == 0, "/proc/self/auxv",
	      "%zu bytes, was %zu", n, auxv_len);
	check(getauxval(AT_PAGESZ) == pagesz && getauxval(AT_RANDOM) == random_at, "getauxval",
	      "pagesz %lu random %#lx", getauxval(AT_PAGESZ), getauxval(AT_RANDOM));
	const char *mark = getenv("MRUN_VICTIM_MARK");
	check(mark && strcmp(mark, "set-before-checkpoint") == 0, "getenv", "'%s'",
	      mark ? mark : "(null)");
	finish();
}
