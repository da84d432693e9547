/*
 * A job that lives until the test tells it how to end, for the `mrun` migration tests: the test
 * moves it between home and nodes and checks, at each stop, who it thinks it is and how it ends.
 *
 * Prints "PID <getpid()>" and "READY", then polls DIR every 10 ms:
 *   - DIR/step-K (K = 1, 2, ... in order) appears: prints
 *     "STEP K PID <getpid()> SYSPID <syscall(SYS_getpid)> TID <gettid>";
 *   - DIR/end appears (the test writes it elsewhere and renames it into place), holding
 *       "exit N"  -> prints "EXIT N" and exits with code N,
 *       "abort"   -> prints "ABORT" and calls abort() (core dumps disabled first).
 * In MODE "handle", signals get handlers that only set flags; the loop then prints
 *   "CAUGHT SIGTERM" and exits 42, "CAUGHT SIGINT" and exits 43, or "USR1 <count>".
 * In MODE "default", every signal keeps its default action (SIGTERM and SIGINT kill it).
 * Gives up (exit 99) after about 100 s.
 *
 * usage: hopper DIR handle|default
 */
#include "victim.h"
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>

static volatile sig_atomic_t got_term, got_int, got_usr1;

static void on_signal(int sig)
{
	if (sig == SIGTERM)
		got_term = 1;
	else if (sig == SIGINT)
		got_int = 1;
	else if (sig == SIGUSR1)
		got_usr1++;
}

static void catch(int sig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL) != 0) {
		say("SETUP-FAILED sigaction %d: %s\n", sig, strerror(errno));
		exit(2);
	}
}

/* The contents of `path` (at most len - 1 bytes, NUL-terminated), or -1. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

int main(int argc, char **argv)
{
	usage_if(argc != 3 || (strcmp(argv[2], "handle") && strcmp(argv[2], "default")),
		 "hopper DIR handle|default");
	const char *dir = argv[1];
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	if (!strcmp(argv[2], "handle")) {
		catch(SIGTERM);
		catch(SIGINT);
		catch(SIGUSR1);
	}
	say("PID %d\n", (int)getpid());
	ready();

	char path[4096], text[256];
	long next_step = 1;
	sig_atomic_t usr1_seen = 0;
	for (long i = 0; i < 10000; i++) {
		if (got_term) {
			say("CAUGHT SIGTERM\n");
			exit(42);
		}
		if (got_int) {
			say("CAUGHT SIGINT\n");
			exit(43);
		}
		while (usr1_seen < got_usr1)
			say("USR1 %d\n", (int)++usr1_seen);
		snprintf(path, sizeof path, "%s/step-%ld", dir, next_step);
		if (file_exists(path)) {
			say("STEP %ld PID %d SYSPID %d TID %d\n", next_step, (int)getpid(),
			    (int)syscall(SYS_getpid), (int)syscall(SYS_gettid));
			next_step++;
		}
		snprintf(path, sizeof path, "%s/end", dir);
		if (read_small(path, text, sizeof text) == 0) {
			int code;
			if (sscanf(text, "exit %d", &code) == 1) {
				say("EXIT %d\n", code);
				exit(code);
			}
			if (!strncmp(text, "abort", 5)) {
				say("ABORT\n");
				abort();
			}
			say("FAIL unknown end %s\n", text);
			exit(98);
		}
		nap_ms(10);
	}
	say("FAIL nobody ended me\n");
	return 99;
}
