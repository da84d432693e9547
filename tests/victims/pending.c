/*
 * Signals pending when the checkpoint is taken are still pending after the restore.
 *
 * Before: SIGUSR2 and SIGRTMIN+1 blocked; SIGUSR2 raised once, SIGRTMIN+1 queued twice with
 * values 7 and 8 (real-time signals queue, each with its own siginfo).
 * After: sigpending() shows both; unblocking delivers SIGUSR2 once and SIGRTMIN+1 twice, with
 * values 7 then 8.
 *
 * usage: pending GO_FILE
 */
#include "victim.h"
#include <signal.h>

static volatile sig_atomic_t usr2_count, rt_count;
static volatile int rt_values[4];

static void on_usr2(int sig)
{
	(void)sig;
	usr2_count++;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (rt_count < 4)
		rt_values[rt_count] = si->si_value.sival_int;
	rt_count++;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "pending GO_FILE");
	int rt = SIGRTMIN + 1;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO;
	sigaction(rt, &sa, NULL);

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, rt);
	sigprocmask(SIG_BLOCK, &block, NULL);
	raise(SIGUSR2);
	union sigval v;
	v.sival_int = 7;
	sigqueue(getpid(), rt, v);
	v.sival_int = 8;
	sigqueue(getpid(), rt, v);

	ready();
	wait_go(argv[1], 0);

	sigset_t pending;
	sigpending(&pending);
	check(sigismember(&pending, SIGUSR2) == 1, "SIGUSR2 still pending", "not pending");
	check(sigismember(&pending, rt) == 1, "SIGRTMIN+1 still pending", "not pending");
	check(usr2_count == 0 && rt_count == 0, "nothing delivered while blocked",
	      "usr2 %d rt %d", (int)usr2_count, (int)rt_count);
	sigprocmask(SIG_UNBLOCK, &block, NULL);
	check(usr2_count == 1, "SIGUSR2 delivered once on unblock", "%d times", (int)usr2_count);
	check(rt_count == 2, "SIGRTMIN+1 delivered twice on unblock", "%d times", (int)rt_count);
	check(rt_values[0] == 7 && rt_values[1] == 8, "queued values in order", "%d, %d",
	      rt_values[0], rt_values[1]);
	finish();
}
