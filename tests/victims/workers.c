/*
 * A parent that feeds three workers over pipes and collects their results (issue 9). The
 * parent leads a session of its own and worker 2 a process group of its own. At the
 * checkpoint: worker 0 has already exited and is not reaped (a zombie with exit code 7); the
 * others wait for the go file with tasks already buffered in their task pipes. After the
 * restore the workers check their own pid, parent, group and session, compute, and the parent
 * checks every result, then reaps all three with their statuses.
 *
 * usage: workers GO_FILE
 */
#include "victim.h"
#include <signal.h>
#include <sys/wait.h>

#define WORKERS 3
#define TASKS 40

struct ids {
	pid_t pid, ppid, pgid, sid;
};

static struct ids own_ids(void)
{
	struct ids i = { getpid(), getppid(), getpgid(0), getsid(0) };
	return i;
}

static uint64_t work(uint64_t n)
{
	uint64_t x = n * 2654435761u;
	for (int k = 0; k < 200000; k++)
		x = x * 6364136223846793005ULL + 1442695040888963407ULL + n;
	return x;
}

static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A worker: after the go file, check its ids, then answer each task until EOF. */
static void worker(int tasks, int results, const char *go)
{
	struct ids before = own_ids();
	wait_go(go, 0);
	struct ids after = own_ids();
	uint64_t same = before.pid == after.pid && before.ppid == after.ppid &&
			before.pgid == after.pgid && before.sid == after.sid;
	write_all(results, (char *)&same, sizeof same);
	uint64_t n;
	while (read_full(tasks, &n, sizeof n) == 0) {
		uint64_t r = work(n);
		write_all(results, (char *)&r, sizeof r);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "workers GO_FILE");
	const char *go = argv[1];
	if (setsid() < 0) {
		perror("setsid");
		return 2;
	}
	struct ids parent_before = own_ids();
	int to[WORKERS][2], from[WORKERS][2];
	pid_t pids[WORKERS];
	for (int w = 0; w < WORKERS; w++) {
		if (pipe(to[w]) != 0 || pipe(from[w]) != 0) {
			perror("pipe");
			return 2;
		}
		pids[w] = fork();
		if (pids[w] < 0) {
			perror("fork");
			return 2;
		}
		if (pids[w] == 0) {
			for (int o = 0; o <= w; o++) {
				if (o != w) {
					close(to[o][1]);
					close(from[o][0]);
				}
			}
			close(to[w][1]);
			close(from[w][0]);
			if (w == 0) {
				uint64_t r = work(0);
				write_all(from[w][1], (char *)&r, sizeof r);
				_exit(7);
			}
			if (w == 2)
				setpgid(0, 0);
			worker(to[w][0], from[w][1], go);
		}
		if (w == 2)
			setpgid(pids[w], pids[w]);
		close(to[w][0]);
		close(from[w][1]);
	}
	/* Tasks wait in the pipes of workers 1 and 2 across the checkpoint. */
	for (uint64_t t = 0; t < TASKS; t++) {
		int w = 1 + (int)(t % 2);
		write_all(to[w][1], (char *)&t, sizeof t);
	}
	/* Worker 0 has exited, not reaped: wait until it is a zombie. */
	siginfo_t si;
	memset(&si, 0, sizeof si);
	int r = waitid(P_PID, (id_t)pids[0], &si, WEXITED | WNOWAIT);
	ready();
	wait_go(go, 0);
	check(r == 0 && si.si_pid == pids[0], "worker 0 exited before the checkpoint", "%d", r);

	struct ids parent_after = own_ids();
	check(parent_before.pid == parent_after.pid && parent_before.pgid == parent_after.pgid &&
		      parent_before.sid == parent_after.sid,
	      "parent pid, group and session unchanged", "pid %d->%d pgid %d->%d sid %d->%d",
	      (int)parent_before.pid, (int)parent_after.pid, (int)parent_before.pgid,
	      (int)parent_after.pgid, (int)parent_before.sid, (int)parent_after.sid);
	uint64_t first;
	check(read_full(from[0][0], &first, sizeof first) == 0 && first == work(0),
	      "worker 0's result waited in its pipe", "got %llu", (unsigned long long)first);
	for (int w = 1; w < WORKERS; w++) {
		uint64_t same = 0;
		check(read_full(from[w][0], &same, sizeof same) == 0 && same == 1,
		      w == 1 ? "worker 1 ids unchanged" : "worker 2 ids unchanged", "%llu",
		      (unsigned long long)same);
		close(to[w][1]);
	}
	int wrong = 0;
	for (uint64_t t = 0; t < TASKS; t++) {
		int w = 1 + (int)(t % 2);
		uint64_t got = 0;
		if (read_full(from[w][0], &got, sizeof got) != 0 || got != work(t))
			wrong++;
	}
	check(wrong == 0, "every task's result came back right", "%d wrong", wrong);
	for (int w = 0; w < WORKERS; w++) {
		int st = 0;
		pid_t got = waitpid(pids[w], &st, 0);
		int want = w == 0 ? 7 : 0;
		check(got == pids[w] && WIFEXITED(st) && WEXITSTATUS(st) == want,
		      w == 0 ? "worker 0 reaped with exit 7" : "worker reaped with exit 0",
		      "waitpid %d status %#x", (int)got, st);
	}
	finish();
}
