/*
 * Process and thread attributes survive a restore: THP-disable, child-subreaper, dumpable,
 * no_new_privs, parent-death signal, oom_score_adj, timer slack (main thread and a second
 * thread with its own), membarrier registration, personality, and the madvise flags of areas
 * as /proc/self/smaps shows them (dc, wf, hg, nh, dd).
 *
 * Mode "root" also makes the process non-dumpable (a process nobody may checkpoint unless
 * privileged); mode "user" stays dumpable.
 *
 * usage: attrs GO_FILE root|user
 */
#include "victim.h"
#include <linux/membarrier.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define MAIN_SLACK 123457UL
#define THREAD_SLACK 222223UL
#define PAGES 8

static volatile int thread_ready, thread_turn, thread_done;
static const char *go_file;

static int membarrier(int cmd, unsigned int flags)
{
	return (int)syscall(SYS_membarrier, cmd, flags, 0);
}

static void *slack_thread(void *arg)
{
	(void)arg;
	prctl(PR_SET_TIMERSLACK, THREAD_SLACK);
	thread_ready = 1;
	while (!thread_turn)
		nap_ms(5);
	unsigned long got = (unsigned long)prctl(PR_GET_TIMERSLACK);
	check(got == THREAD_SLACK, "timer slack of the second thread", "%lu", got);
	thread_done = 1;
	return NULL;
}

static int read_oom(void)
{
	char buf[32] = "";
	int fd = open("/proc/self/oom_score_adj", O_RDONLY);
	if (fd < 0)
		return -9999;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	return n > 0 ? atoi(buf) : -9999;
}

static int write_oom(int v)
{
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%d", v);
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0)
		return -1;
	int ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok ? 0 : -1;
}

/* The VmFlags line of the smaps entry that starts at `start` (empty if none). */
static void vmflags_at(uintptr_t start, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[1024];
	int in = 0;
	out[0] = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) {
			in = (s == start);
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(out, len, "%s", line + 8);
			break;
		}
	}
	if (f)
		fclose(f);
}

static int has_flag(const char *flags, const char *code)
{
	char pad[1100];
	char want[8];
	snprintf(pad, sizeof pad, " %s ", flags);
	for (char *p = pad; *p; p++)
		if (*p == '\n')
			*p = ' ';
	snprintf(want, sizeof want, " %s ", code);
	return strstr(pad, want) != NULL;
}

static void fail_setup(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	_exit(2);
}

int main(int argc, char **argv)
{
	usage_if(argc != 3 || (strcmp(argv[2], "root") && strcmp(argv[2], "user")),
		 "attrs GO_FILE root|user");
	go_file = argv[1];
	int privileged = strcmp(argv[2], "root") == 0;
	long page = sysconf(_SC_PAGESIZE);

	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		fail_setup("PR_SET_THP_DISABLE");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		fail_setup("PR_SET_CHILD_SUBREAPER");
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2))
		fail_setup("PR_SET_PDEATHSIG");
	if (prctl(PR_SET_TIMERSLACK, MAIN_SLACK))
		fail_setup("PR_SET_TIMERSLACK");
	if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0))
		fail_setup("membarrier register");
	int pers = personality(0xffffffff);
	if (personality((unsigned long)pers | ADDR_NO_RANDOMIZE) < 0)
		fail_setup("personality");
	/* Up, then down again: anyone may lower it back to where a privileged process left it. */
	int want_oom = privileged ? 234 : 345;
	if (write_oom(700) || write_oom(want_oom))
		fail_setup("oom_score_adj");

	unsigned char *m = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		fail_setup("mmap");
	for (long i = 0; i < PAGES * page; i++)
		m[i] = (unsigned char)(i * 7 + 3);
	/* One advice per area, so each is a VMA of its own; page 7 keeps none. */
	struct { int page, advice; const char *code; } adv[] = {
		{ 0, MADV_DONTFORK, "dc" },  { 1, MADV_WIPEONFORK, "wf" },
		{ 3, MADV_HUGEPAGE, "hg" },  { 5, MADV_NOHUGEPAGE, "nh" },
		{ 6, MADV_DONTDUMP, "dd" },
	};
	for (size_t i = 0; i < sizeof adv / sizeof adv[0]; i++)
		if (madvise(m + adv[i].page * page, page, adv[i].advice))
			fail_setup(adv[i].code);

	pthread_t t;
	if (pthread_create(&t, NULL, slack_thread, NULL))
		fail_setup("pthread_create");
	while (!thread_ready)
		nap_ms(5);
	/* Last: nothing after this may need privileges the process gave up. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		fail_setup("PR_SET_NO_NEW_PRIVS");
	if (privileged && prctl(PR_SET_DUMPABLE, 0))
		fail_setup("PR_SET_DUMPABLE");

	ready();
	wait_go(go_file, 0);

	int v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	check(v == 1, "THP disabled", "PR_GET_THP_DISABLE %d", v);
	int sub = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &sub);
	check(sub == 1, "child subreaper", "%d", sub);
	v = prctl(PR_GET_DUMPABLE);
	check(v == (privileged ? 0 : 1), "dumpable", "%d", v);
	v = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
	check(v == 1, "no_new_privs", "%d", v);
	int sig = 0;
	prctl(PR_GET_PDEATHSIG, &sig);
	check(sig == SIGUSR2, "parent-death signal", "%d", sig);
	v = read_oom();
	check(v == want_oom, "oom_score_adj", "%d, want %d", v, want_oom);
	unsigned long slack = (unsigned long)prctl(PR_GET_TIMERSLACK);
	check(slack == MAIN_SLACK, "timer slack of the main thread", "%lu", slack);
	thread_turn = 1;
	for (int i = 0; i < 6000 && !thread_done; i++)
		nap_ms(10);
	check(thread_done, "second thread ran its check", "it did not");
	pthread_join(t, NULL);
	v = membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
	check(v == 0, "membarrier private expedited registration", "%s", strerror(errno));
	v = personality(0xffffffff);
	check(v == (pers | ADDR_NO_RANDOMIZE), "personality", "%#x", v);

	for (size_t i = 0; i < sizeof adv / sizeof adv[0]; i++) {
		char flags[1024], what[64];
		vmflags_at((uintptr_t)(m + adv[i].page * page), flags, sizeof flags);
		snprintf(what, sizeof what, "VmFlags %s", adv[i].code);
		check(has_flag(flags, adv[i].code), what, "'%s'", flags);
	}
	char flags[1024];
	vmflags_at((uintptr_t)(m + 7 * page), flags, sizeof flags);
	check(!has_flag(flags, "dd") && !has_flag(flags, "wf") && !has_flag(flags, "hg") &&
		      !has_flag(flags, "nh") && !has_flag(flags, "dc"),
	      "no advice where none was given", "'%s'", flags);
	long bad = -1;
	for (long i = 0; i < PAGES * page && bad < 0; i++)
		if (m[i] != (unsigned char)(i * 7 + 3))
			bad = i;
	check(bad < 0, "contents of the advised areas", "byte %ld differs", bad);
	finish();
}
