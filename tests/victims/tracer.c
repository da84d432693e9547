/*
 * Keeps another process ptrace-attached (PTRACE_SEIZE, so the tracee is not stopped) until the
 * tracee exits, passing every signal through. Prints "TRACING <pid>" once attached.
 *
 * usage: tracer PID
 */
#include "victim.h"
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	usage_if(argc != 2, "tracer PID");
	pid_t pid = atoi(argv[1]);
	if (ptrace(PTRACE_SEIZE, pid, NULL, NULL) != 0) {
		say("SEIZE-FAILED %s\n", strerror(errno));
		return 2;
	}
	say("TRACING %d\n", (int)pid);
	for (;;) {
		int st;
		pid_t w = waitpid(pid, &st, __WALL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			say("WAIT-FAILED %s\n", strerror(errno));
			return 2;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			say("TRACEE-DONE %#x\n", st);
			return 0;
		}
		if (WIFSTOPPED(st)) {
			int sig = WSTOPSIG(st);
			int event = st >> 16;
			if (event == PTRACE_EVENT_STOP) /* group-stop: let it stop as usual */
				ptrace(PTRACE_LISTEN, pid, NULL, NULL);
			else
				ptrace(PTRACE_CONT, pid, NULL, (void *)(long)sig);
		}
	}
}
