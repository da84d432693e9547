/*
 * The restored process has the same pid (as it sees itself) as the original.
 *
 * Prints "PID <n>" before the checkpoint and "PID-AFTER <n>" after it; the test compares both
 * with the pid it started. Also checks what glibc caches about its own thread id: gettid(),
 * pthread_kill(pthread_self()) and pthread_getschedparam(pthread_self()) work (they fail with
 * ESRCH, or hit another process, when the tid glibc cached is stale).
 *
 * usage: getpid GO_FILE
 */
#include "victim.h"
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>

static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "getpid GO_FILE");
	signal(SIGUSR1, on_usr1);
	pid_t before = getpid();
	say("PID %d\n", (int)before);
	ready();
	wait_go(argv[1], 0);

	pid_t after = getpid();
	pid_t sys_after = (pid_t)syscall(SYS_getpid);
	say("PID-AFTER %d\n", (int)after);
	check(after == before, "getpid unchanged", "before %d after %d", (int)before, (int)after);
	check(sys_after == before, "SYS_getpid unchanged", "before %d after %d", (int)before,
	      (int)sys_after);
	pid_t tid = (pid_t)syscall(SYS_gettid);
	check(tid == before, "gettid == pid", "tid %d", (int)tid);
	check(kill(before, 0) == 0, "kill(getpid(), 0)", "errno %d", errno);

	int r = pthread_kill(pthread_self(), SIGUSR1);
	check(r == 0 && usr1 == 1, "pthread_kill(pthread_self())", "ret %d, handler ran %d times", r,
	      (int)usr1);
	struct sched_param sp;
	int policy;
	r = pthread_getschedparam(pthread_self(), &policy, &sp);
	check(r == 0, "pthread_getschedparam(pthread_self())", "ret %d", r);
	raise(SIGUSR1);
	check(usr1 == 2, "raise(SIGUSR1)", "handler ran %d times", (int)usr1);
	finish();
}
