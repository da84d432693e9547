/*
 * Process groups of a job that a naive top-down restore gets wrong (issue 9), as a shell with
 * job control makes them:
 *   - a group whose leader has exited: A leads it, B joins, A exits and is reaped (a pipeline
 *     whose first command ended); the group must live on for B, and signals to it reach B;
 *   - a group led by a later sibling: C is moved into the group of D, forked after C;
 *   - C's child E, forked before C moved, stays in the root's group.
 * After the restore the parent checks every group and that a signal to A's group reaches B.
 *
 * usage: groups GO_FILE
 */
#include "victim.h"
#include <signal.h>
#include <sys/wait.h>

static void wait_for_usr1(void)
{
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	struct timespec limit = {.tv_sec = 20};
	_exit(sigtimedwait(&usr1, NULL, &limit) == SIGUSR1 ? 0 : 4);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "groups GO_FILE");
	const char *go = argv[1];
	char checked[4096]; /* E lives until the parent has looked at its group */
	snprintf(checked, sizeof checked, "%s.checked", go);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);

	pid_t a = fork();
	if (a == 0) {
		setpgid(0, 0);
		_exit(0);
	}
	setpgid(a, a);
	pid_t b = fork();
	if (b == 0) {
		setpgid(0, a);
		wait_go(go, 0);
		wait_for_usr1();
	}
	setpgid(b, a);
	int st = 0;
	waitpid(a, &st, 0);

	int e_pid[2];
	if (pipe(e_pid) != 0) {
		perror("pipe");
		return 2;
	}
	pid_t c = fork();
	if (c == 0) {
		pid_t e = fork();
		if (e == 0) {
			wait_go(checked, 0);
			_exit(0);
		}
		if (write(e_pid[1], &e, sizeof e) != sizeof e)
			_exit(2);
		wait_go(go, 0);
		int est = 0;
		_exit(waitpid(e, &est, 0) == e && WIFEXITED(est) && WEXITSTATUS(est) == 0 ? 0 : 5);
	}
	pid_t e = 0;
	if (read(e_pid[0], &e, sizeof e) != sizeof e) {
		perror("reading E's pid");
		return 2;
	}
	pid_t d = fork();
	if (d == 0) {
		setpgid(0, 0);
		wait_go(go, 0);
		_exit(0);
	}
	setpgid(d, d);
	if (setpgid(c, d) != 0) {
		perror("moving C into D's group");
		return 2;
	}
	if (getpgid(b) != a || getpgid(c) != d || getpgid(e) != getpgid(0) || kill(a, 0) == 0) {
		say("setup went wrong\n");
		return 2;
	}
	ready();
	wait_go(go, 0);

	check(kill(a, 0) != 0 && errno == ESRCH, "A, the exited leader, is still gone", "%s",
	      strerror(errno));
	check(getpgid(b) == a, "B is in the group of the exited A", "pgid %d, A %d", getpgid(b), a);
	check(getpgid(c) == d, "C is in the group of D, its later sibling", "pgid %d, D %d",
	      getpgid(c), d);
	check(getpgid(d) == d, "D leads its group", "pgid %d", getpgid(d));
	/* The root's group may be led from outside the restored pid namespace: compare now. */
	check(getpgid(e) == getpgid(0), "E, C's child, is in the root's group",
	      "pgid %d, root's %d", getpgid(e), getpgid(0));
	check(getsid(b) == getsid(0) && getsid(c) == getsid(0), "all are in the root's session",
	      "sids %d %d, root's %d", getsid(b), getsid(c), getsid(0));
	int made = open(checked, O_CREAT | O_WRONLY, 0600);
	if (made >= 0)
		close(made);
	check(kill(-a, SIGUSR1) == 0, "a signal can be sent to A's group", "%s", strerror(errno));
	pid_t kids[3] = {b, c, d};
	const char *names[3] = {"B (got the group's signal)", "C (reaped E)", "D"};
	for (int k = 0; k < 3; k++) {
		st = 0;
		pid_t got = waitpid(kids[k], &st, 0);
		check(got == kids[k] && WIFEXITED(st) && WEXITSTATUS(st) == 0, names[k],
		      "status %#x", st);
	}
	finish();
}
