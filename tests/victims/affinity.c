/*
 * CPU affinity survives a restore, thread by thread: one thread pinned to the highest CPU the
 * process may use, the main thread and another thread left on every CPU. After the restore
 * the pinned thread must still be pinned there, and the others must have every CPU again,
 * not the CPU the restorer happened to run on.
 *
 * usage: affinity GO_FILE
 */
#include "victim.h"
#include <pthread.h>
#include <sched.h>

static cpu_set_t all;
static int last_cpu = -1;
static volatile int started[2];
static const char *go;
static int ok[2];
static char seen[2][256];

static void describe(const cpu_set_t *set, char *out, size_t len)
{
	size_t at = 0;
	out[0] = 0;
	for (int c = 0; c < CPU_SETSIZE && at + 8 < len; c++)
		if (CPU_ISSET(c, set))
			at += (size_t)snprintf(out + at, len - at, at ? ",%d" : "%d", c);
}

static void *worker(void *arg)
{
	int i = (int)(long)arg;
	if (i == 0) {
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(last_cpu, &one);
		if (sched_setaffinity(0, sizeof one, &one) != 0) {
			say("FAIL pinning thread: %s\n", strerror(errno));
			_exit(2);
		}
	}
	started[i] = 1;
	wait_go(go, 0);
	cpu_set_t now;
	sched_getaffinity(0, sizeof now, &now);
	describe(&now, seen[i], sizeof seen[i]);
	if (i == 0) {
		ok[i] = CPU_COUNT(&now) == 1 && CPU_ISSET(last_cpu, &now);
	} else {
		ok[i] = CPU_EQUAL(&now, &all);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "affinity GO_FILE");
	go = argv[1];
	sched_getaffinity(0, sizeof all, &all);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all))
			last_cpu = c;
	pthread_t t[2];
	for (long i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	while (!started[0] || !started[1])
		nap_ms(1);
	ready();
	wait_go(go, 0);
	cpu_set_t now;
	char mine[256], want[256];
	sched_getaffinity(0, sizeof now, &now);
	describe(&now, mine, sizeof mine);
	describe(&all, want, sizeof want);
	check(CPU_EQUAL(&now, &all), "main thread on every CPU", "has %s, had %s", mine, want);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	check(ok[0], "pinned thread still pinned", "has %s, had %d", seen[0], last_cpu);
	check(ok[1], "unpinned thread on every CPU", "has %s, had %s", seen[1], want);
	finish();
}
