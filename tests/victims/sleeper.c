/*
 * A process frozen while blocked in nanosleep() finishes its sleep after the restore.
 *
 * Like coreutils sleep, it retries nanosleep() with the remaining time on EINTR (a sleep
 * interrupted by a checkpoint may return EINTR after the restore: its restart block cannot
 * move). At the end it checks that at least the requested time passed on CLOCK_MONOTONIC.
 *
 * usage: sleeper SECONDS
 */
#include "victim.h"

int main(int argc, char **argv)
{
	usage_if(argc != 2, "sleeper SECONDS");
	struct timespec req = { atoi(argv[1]), 0 }, rem, t0, t1;
	int64_t want = ts_ns(&req);
	int eintr = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ready();
	while (nanosleep(&req, &rem) != 0) {
		if (errno != EINTR) {
			check(0, "nanosleep", "errno %d", errno);
			finish();
		}
		eintr++;
		req = rem;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	say("INFO nanosleep returned EINTR %d times\n", eintr);
	int64_t slept = ts_ns(&t1) - ts_ns(&t0);
	check(slept >= want, "slept at least the requested time", "slept %lld ns of %lld",
	      (long long)slept, (long long)want);
	check(eintr <= 1, "at most one EINTR", "%d", eintr);
	finish();
}
