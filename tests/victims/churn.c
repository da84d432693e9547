/*
 * Threads keep being created and exiting while the process is checkpointed (several times).
 *
 * Main keeps up to INFLIGHT short-lived threads alive: each computes a small checksum of its
 * own number, records its tid and exits; main joins the oldest, checks its result and starts
 * the next one, without pause. A detached thread is also started every few rounds, so exits
 * nobody waits for happen too. "READY" comes after the first rounds; the churn goes on until
 * the go file appears, then for at least CHURN_AFTER more rounds, and every result must be
 * right, every tid distinct from the ones alive with it, and thread creation still work.
 *
 * usage: churn GO_FILE
 */
#include "victim.h"
#include <pthread.h>
#include <sys/syscall.h>

#define INFLIGHT 4
#define CHURN_AFTER 2000

struct job {
	pthread_t t;
	unsigned long n;
	uint64_t result;
	pid_t tid;
};

static volatile long detached_done;

static uint64_t work(unsigned long n)
{
	uint64_t x = n * 0x9e3779b97f4a7c15ULL + 1;
	for (int i = 0; i < 2000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
	}
	return x;
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	j->tid = (pid_t)syscall(SYS_gettid);
	j->result = work(j->n);
	return j;
}

static void *detached_main(void *arg)
{
	(void)arg;
	volatile uint64_t r = work(7);
	(void)r;
	__atomic_add_fetch(&detached_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static struct job jobs[INFLIGHT];
static long bad_results, bad_tids, create_errors, rounds;
static char first_bad[200];

static void start_job(struct job *j, unsigned long n)
{
	j->n = n;
	j->result = 0;
	j->tid = 0;
	int r;
	while ((r = pthread_create(&j->t, NULL, job_main, j)) == EAGAIN)
		nap_ms(1);
	if (r != 0) {
		if (create_errors++ == 0)
			snprintf(first_bad, sizeof first_bad, "pthread_create: %s", strerror(r));
		say("FAIL pthread_create: %s\n", strerror(r));
		_exit(3);
	}
}

static void finish_job(struct job *j)
{
	void *ret = NULL;
	int r = pthread_join(j->t, &ret);
	if (r != 0 || ret != j || j->result != work(j->n)) {
		if (bad_results++ == 0)
			snprintf(first_bad, sizeof first_bad,
				 "thread %lu: join %d ret %p result %#llx", j->n, r, ret,
				 (unsigned long long)j->result);
	}
	if (j->tid <= 0 || j->tid == getpid())
		bad_tids++;
}

static void round_once(void)
{
	struct job *j = &jobs[rounds % INFLIGHT];
	finish_job(j);
	start_job(j, (unsigned long)rounds + INFLIGHT);
	if (rounds % 16 == 0) {
		pthread_t d;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&d, &a, detached_main, NULL) != 0)
			create_errors++;
		pthread_attr_destroy(&a);
	}
	rounds++;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "churn GO_FILE");
	for (int i = 0; i < INFLIGHT; i++)
		start_job(&jobs[i], (unsigned long)i);
	for (int i = 0; i < 200; i++)
		round_once();
	ready();
	long waited = 0;
	/* About 100 s at most: the go file is checked every 64 rounds. */
	for (long k = 0; !file_exists(argv[1]); k++) {
		for (int i = 0; i < 64; i++)
			round_once();
		if (++waited > 100000) {
			say("FAIL go file never appeared\n");
			return 3;
		}
		if (k % 8 == 0)
			nap_ms(1); /* a breath for the test and the engine on busy CPUs */
	}
	long at_go = rounds;
	for (int i = 0; i < CHURN_AFTER; i++)
		round_once();
	for (int i = 0; i < INFLIGHT; i++)
		finish_job(&jobs[i]);
	for (int k = 0; k < 2000 && detached_done < rounds / 16; k++)
		nap_ms(5);
	say("ROUNDS %ld (%ld after go)\n", rounds, rounds - at_go);
	check(bad_results == 0, "every thread's result", "%ld bad, first: %s", bad_results, first_bad);
	check(bad_tids == 0, "every thread had a tid of its own", "%ld bad", bad_tids);
	check(create_errors == 0, "thread creation never failed", "%ld errors: %s", create_errors,
	      first_bad);
	check(rounds - at_go >= CHURN_AFTER, "churn went on after the restore", "%ld rounds",
	      rounds - at_go);
	check(detached_done >= rounds / 16, "detached threads ran to their end", "%ld of %ld",
	      detached_done, rounds / 16);
	finish();
}
