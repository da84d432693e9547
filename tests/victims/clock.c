/*
 * The vDSO clocks work after a restore and agree with the real system calls.
 *
 * glibc's clock_gettime/gettimeofday/time go through the vDSO; syscall(SYS_clock_gettime)
 * does not. After the restore: CLOCK_MONOTONIC has not gone backwards relative to before the
 * checkpoint (same machine), each vDSO clock brackets the syscall's value, CLOCK_REALTIME is
 * within a second of the syscall's, and a tight loop never sees the clock go backwards.
 *
 * usage: clock GO_FILE
 */
#include "victim.h"
#include <sys/syscall.h>
#include <sys/time.h>

static int64_t vdso_ns(clockid_t c)
{
	struct timespec t;
	if (clock_gettime(c, &t) != 0)
		return -1;
	return ts_ns(&t);
}

static int64_t sys_ns(clockid_t c)
{
	struct timespec t;
	if (syscall(SYS_clock_gettime, c, &t) != 0)
		return -1;
	return ts_ns(&t);
}

/* vDSO before <= syscall <= vDSO after, with `slop` for coarse clocks. */
static void bracket(clockid_t c, const char *name, int64_t slop)
{
	int64_t a = vdso_ns(c), s = sys_ns(c), b = vdso_ns(c);
	char what[64];
	snprintf(what, sizeof what, "%s vdso brackets syscall", name);
	check(a > 0 && s > 0 && a <= s + slop && s <= b + slop, what,
	      "vdso %lld, syscall %lld, vdso %lld", (long long)a, (long long)s, (long long)b);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "clock GO_FILE");

	int64_t mono_before = vdso_ns(CLOCK_MONOTONIC);
	int64_t boot_before = vdso_ns(CLOCK_BOOTTIME);
	int64_t real_before = vdso_ns(CLOCK_REALTIME);
	ready();
	wait_go(argv[1], 0);

	int64_t mono_after = vdso_ns(CLOCK_MONOTONIC);
	int64_t boot_after = vdso_ns(CLOCK_BOOTTIME);
	int64_t real_after = vdso_ns(CLOCK_REALTIME);
	check(mono_after >= mono_before, "CLOCK_MONOTONIC did not go backwards",
	      "before %lld after %lld", (long long)mono_before, (long long)mono_after);
	check(boot_after >= boot_before, "CLOCK_BOOTTIME did not go backwards",
	      "before %lld after %lld", (long long)boot_before, (long long)boot_after);
	check(real_after >= real_before - 1000000000LL, "CLOCK_REALTIME sane",
	      "before %lld after %lld", (long long)real_before, (long long)real_after);
	check(mono_after - mono_before < 600LL * 1000000000LL, "CLOCK_MONOTONIC advanced plausibly",
	      "advanced %lld ns", (long long)(mono_after - mono_before));

	bracket(CLOCK_MONOTONIC, "CLOCK_MONOTONIC", 0);
	bracket(CLOCK_BOOTTIME, "CLOCK_BOOTTIME", 0);
	bracket(CLOCK_MONOTONIC_RAW, "CLOCK_MONOTONIC_RAW", 0);
	bracket(CLOCK_MONOTONIC_COARSE, "CLOCK_MONOTONIC_COARSE", 20000000LL);
	bracket(CLOCK_REALTIME_COARSE, "CLOCK_REALTIME_COARSE", 20000000LL);

	int64_t rv = vdso_ns(CLOCK_REALTIME), rs = sys_ns(CLOCK_REALTIME);
	int64_t d = rv > rs ? rv - rs : rs - rv;
	check(d < 1000000000LL, "CLOCK_REALTIME vdso vs syscall", "differ by %lld ns", (long long)d);

	time_t tv = time(NULL);
	long ts = syscall(SYS_time, NULL);
	check(tv >= ts - 1 && tv <= ts + 1, "time() vs SYS_time", "time() %lld, syscall %ld",
	      (long long)tv, ts);

	struct timeval g;
	gettimeofday(&g, NULL);
	struct timeval gs;
	syscall(SYS_gettimeofday, &gs, NULL);
	long long gd = (long long)(g.tv_sec - gs.tv_sec) * 1000000LL + (g.tv_usec - gs.tv_usec);
	check(gd > -1000000LL && gd < 1000000LL, "gettimeofday vdso vs syscall", "differ by %lld us",
	      gd);

	int64_t prev = vdso_ns(CLOCK_MONOTONIC);
	long backwards = 0;
	for (int i = 0; i < 200000; i++) {
		int64_t now = vdso_ns(CLOCK_MONOTONIC);
		if (now < prev)
			backwards++;
		prev = now;
	}
	check(backwards == 0, "CLOCK_MONOTONIC never steps back in a loop", "%ld steps back",
	      backwards);

	int64_t t0 = vdso_ns(CLOCK_MONOTONIC);
	nap_ms(50);
	int64_t t1 = vdso_ns(CLOCK_MONOTONIC);
	check(t1 - t0 >= 50000000LL, "nanosleep(50ms) measured by the vdso", "measured %lld ns",
	      (long long)(t1 - t0));
	finish();
}
