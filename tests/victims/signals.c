/*
 * Signal dispositions and the signal mask survive a checkpoint/restore.
 *
 * Before: SIGUSR1 -> handler with SA_RESTART and sa_mask {SIGINT, SIGQUIT}; SIGHUP -> an
 * SA_SIGINFO|SA_NODEFER handler; SIGPIPE ignored; SIGUSR2 blocked.
 * After: the same sigactions are read back, the mask still blocks SIGUSR2, and raising the
 * signals runs the handlers with the right mask and siginfo.
 *
 * usage: signals GO_FILE
 */
#include "victim.h"
#include <signal.h>

static volatile sig_atomic_t usr1_count;
static sigset_t usr1_handler_mask;
static volatile sig_atomic_t hup_count;
static volatile int hup_signo, hup_value;
static volatile pid_t hup_pid;
static volatile sig_atomic_t usr2_count;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_count++;
	sigprocmask(SIG_BLOCK, NULL, &usr1_handler_mask);
}

static void on_hup(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	hup_count++;
	hup_signo = si->si_signo;
	hup_pid = si->si_pid;
	hup_value = si->si_value.sival_int;
}

static void on_usr2(int sig)
{
	(void)sig;
	usr2_count++;
}

static int same_set(const sigset_t *a, const sigset_t *b, int *first_diff)
{
	for (int s = 1; s < 65; s++) {
		if (s >= 32 && s < SIGRTMIN)
			continue; /* glibc-internal signals cannot be set by the program */
		if (sigismember(a, s) != sigismember(b, s)) {
			*first_diff = s;
			return 0;
		}
	}
	return 1;
}

static void compare_action(int sig, const struct sigaction *before)
{
	struct sigaction now;
	char what[64];
	int diff = 0;
	sigaction(sig, NULL, &now);
	snprintf(what, sizeof what, "sigaction(%d) handler", sig);
	check(now.sa_handler == before->sa_handler, what, "before %p now %p",
	      (void *)before->sa_handler, (void *)now.sa_handler);
	snprintf(what, sizeof what, "sigaction(%d) flags", sig);
	check(now.sa_flags == before->sa_flags, what, "before %#x now %#x", before->sa_flags,
	      now.sa_flags);
	snprintf(what, sizeof what, "sigaction(%d) sa_mask", sig);
	check(same_set(&now.sa_mask, &before->sa_mask, &diff), what, "differs at signal %d", diff);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "signals GO_FILE");

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGQUIT);
	sigaction(SIGUSR1, &sa, NULL);

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_hup;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaction(SIGHUP, &sa, NULL);

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr2;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);

	signal(SIGPIPE, SIG_IGN);

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, NULL);

	struct sigaction before_usr1, before_hup, before_usr2, before_pipe, before_term;
	sigaction(SIGUSR1, NULL, &before_usr1);
	sigaction(SIGHUP, NULL, &before_hup);
	sigaction(SIGUSR2, NULL, &before_usr2);
	sigaction(SIGPIPE, NULL, &before_pipe);
	sigaction(SIGTERM, NULL, &before_term);
	sigset_t before_mask;
	sigprocmask(SIG_BLOCK, NULL, &before_mask);

	ready();
	wait_go(argv[1], 0);

	compare_action(SIGUSR1, &before_usr1);
	compare_action(SIGHUP, &before_hup);
	compare_action(SIGUSR2, &before_usr2);
	compare_action(SIGPIPE, &before_pipe);
	compare_action(SIGTERM, &before_term);

	struct sigaction now;
	sigaction(SIGPIPE, NULL, &now);
	check(now.sa_handler == SIG_IGN, "SIGPIPE still ignored", "handler %p", (void *)now.sa_handler);
	sigaction(SIGTERM, NULL, &now);
	check(now.sa_handler == SIG_DFL, "SIGTERM still default", "handler %p", (void *)now.sa_handler);
	sigaction(SIGUSR1, NULL, &now);
	check(now.sa_flags & SA_RESTART, "SIGUSR1 has SA_RESTART", "flags %#x", now.sa_flags);

	sigset_t mask;
	int diff = 0;
	sigprocmask(SIG_BLOCK, NULL, &mask);
	check(sigismember(&mask, SIGUSR2) == 1, "SIGUSR2 still blocked", "not in the mask");
	check(sigismember(&mask, SIGUSR1) == 0, "SIGUSR1 not blocked", "in the mask");
	check(same_set(&mask, &before_mask, &diff), "signal mask unchanged", "differs at %d", diff);

	sigset_t pending;
	sigpending(&pending);
	check(sigismember(&pending, SIGUSR2) == 0, "nothing pending after restore", "SIGUSR2 pending");

	raise(SIGUSR1);
	check(usr1_count == 1, "SIGUSR1 handler ran", "count %d", (int)usr1_count);
	check(sigismember(&usr1_handler_mask, SIGINT) == 1 &&
		      sigismember(&usr1_handler_mask, SIGQUIT) == 1,
	      "sa_mask applied in handler", "SIGINT %d SIGQUIT %d",
	      sigismember(&usr1_handler_mask, SIGINT), sigismember(&usr1_handler_mask, SIGQUIT));
	check(sigismember(&usr1_handler_mask, SIGUSR1) == 1, "SIGUSR1 deferred in its handler",
	      "not blocked");
	check(sigismember(&usr1_handler_mask, SIGUSR2) == 1, "SIGUSR2 blocked in handler",
	      "not blocked");

	union sigval v = { .sival_int = 4242 };
	sigqueue(getpid(), SIGHUP, v);
	check(hup_count == 1, "SIGHUP SA_SIGINFO handler ran", "count %d", (int)hup_count);
	check(hup_signo == SIGHUP && hup_value == 4242 && hup_pid == getpid(), "SIGHUP siginfo",
	      "signo %d value %d pid %d (getpid %d)", hup_signo, hup_value, (int)hup_pid,
	      (int)getpid());

	kill(getpid(), SIGUSR2);
	sigpending(&pending);
	check(sigismember(&pending, SIGUSR2) == 1, "blocked SIGUSR2 stays pending", "not pending");
	check(usr2_count == 0, "blocked SIGUSR2 not delivered", "count %d", (int)usr2_count);
	sigprocmask(SIG_UNBLOCK, &block, NULL);
	check(usr2_count == 1, "SIGUSR2 delivered on unblock", "count %d", (int)usr2_count);

	finish();
}
