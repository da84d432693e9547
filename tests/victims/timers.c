/*
 * Timers survive a checkpoint/restore: interval timers (ITIMER_REAL with a handler,
 * ITIMER_VIRTUAL) and POSIX timers of every notification kind, with a gap in their ids.
 *
 *   timers GO_FILE
 *
 * Before READY it arms, from `t0` (CLOCK_MONOTONIC):
 *   A  POSIX, CLOCK_MONOTONIC, SIGEV_SIGNAL SIGUSR1, value 0xa11ce, fires at t0 + 3.0 s;
 *      (a timer created and deleted, so the ids have a gap)
 *   B  POSIX, CLOCK_MONOTONIC, SIGEV_THREAD_ID to the worker thread, SIGRTMIN+1, value 0xb0b,
 *      first at t0 + 3.2 s, then every 300 ms;
 *   C  POSIX, CLOCK_MONOTONIC, SIGEV_SIGNAL SIGUSR2, never armed;
 *   D  POSIX, CLOCK_MONOTONIC, SIGEV_NONE, 100 s;
 *   E  POSIX, CLOCK_REALTIME, SIGEV_SIGNAL SIGRTMIN+2, value 0xe, fires at the wall-clock time
 *      now + 3.4 s;
 *   F  POSIX, CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 50 s of CPU time;
 *   Q  POSIX, CLOCK_MONOTONIC, SIGRTMIN+3 (blocked), fired before READY: its signal waits in
 *      the queue at the checkpoint and must be delivered once, not twice;
 *   P  POSIX, CLOCK_MONOTONIC, SIGRTMIN+4 (blocked), every 20 ms: its signal waits in the queue
 *      too, so the kernel does not queue another until it is taken; after the restore, a
 *      while later, unblocking it delivers one signal, not two;
 *   G  POSIX, CLOCK_MONOTONIC, SIGEV_THREAD (glibc: a helper thread waits for the kernel's
 *      SIGEV_THREAD_ID signal and starts a thread for the callback), value 0x6, at t0 + 3.1 s;
 *   R  ITIMER_REAL, first at t0 + 2.8 s, then every 500 ms;
 *   V  ITIMER_VIRTUAL, 100 s of user CPU time.
 *
 * The test checkpoints right after READY and restores (a second later, or more than once). After
 * the go file: the time the process spent frozen (`gap`, measured by naps that straddle it)
 * does not count for monotonic timers, which fire at their deadline + gap; the realtime timer
 * fires at its wall-clock deadline; each fires no earlier than that and at most LATE_MS after,
 * with its sigev_value and timer id, to the right thread.
 */
#include "victim.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/time.h>

#define LATE_MS 50
/* The checkpoint reads a timer a little after the process froze, and the restore arms it a
 * little before the process runs: that time counts for the timer. */
#define EARLY_MS 100
#define MS 1000000LL

struct fired {
	atomic_int count;
	int64_t first_ns, second_ns, first_rt_ns;
	uintptr_t value;
	int timerid;
	pid_t tid;
};

static struct fired fa, fb, fe, fg, fq, fp, fr, fv, fother;
static atomic_int worker_stop;
static atomic_int worker_tid;

static int64_t now_ns(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return ts_ns(&t);
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	struct fired *f = sig == SIGUSR1        ? &fa
			  : sig == SIGRTMIN + 1 ? &fb
			  : sig == SIGRTMIN + 2 ? &fe
			  : sig == SIGRTMIN + 3 ? &fq
			  : sig == SIGRTMIN + 4 ? &fp
			  : sig == SIGALRM      ? &fr
			  : sig == SIGVTALRM    ? &fv
						: &fother;
	int n = atomic_fetch_add(&f->count, 1);
	int64_t t = now_ns(CLOCK_MONOTONIC);
	if (n == 0) {
		f->first_ns = t;
		f->first_rt_ns = now_ns(CLOCK_REALTIME);
		f->value = (uintptr_t)si->si_value.sival_ptr;
		f->timerid = si->si_code == SI_TIMER ? si->si_timerid : -1;
		f->tid = (pid_t)syscall(SYS_gettid);
	} else if (n == 1) {
		f->second_ns = t;
	}
}

static void on_thread_timer(union sigval v)
{
	if (atomic_fetch_add(&fg.count, 1) == 0) {
		fg.first_ns = now_ns(CLOCK_MONOTONIC);
		fg.value = (uintptr_t)v.sival_ptr;
	}
}

static void *worker(void *arg)
{
	(void)arg;
	atomic_store(&worker_tid, (int)syscall(SYS_gettid));
	while (!atomic_load(&worker_stop))
		nap_ms(5);
	return NULL;
}

static timer_t make(clockid_t clock, int notify, int signo, uintptr_t value, pid_t tid)
{
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = notify;
	sev.sigev_signo = signo;
	sev.sigev_value.sival_ptr = (void *)value;
	if (notify == SIGEV_THREAD_ID)
		sev._sigev_un._tid = tid;
	timer_t t;
	if (timer_create(clock, &sev, &t) != 0) {
		say("FAIL timer_create: %s\n", strerror(errno));
		_exit(2);
	}
	return t;
}

static void arm(timer_t t, int64_t value_ns, int64_t interval_ns)
{
	struct itimerspec its = {
		.it_interval = { interval_ns / 1000000000, interval_ns % 1000000000 },
		.it_value = { value_ns / 1000000000, value_ns % 1000000000 },
	};
	if (timer_settime(t, 0, &its, NULL) != 0) {
		say("FAIL timer_settime: %s\n", strerror(errno));
		_exit(2);
	}
}

static int64_t remaining(timer_t t, int64_t *interval)
{
	struct itimerspec its;
	if (timer_gettime(t, &its) != 0)
		return -1;
	if (interval)
		*interval = ts_ns(&its.it_interval);
	return ts_ns(&its.it_value);
}

/* `at` is no earlier than `want` and at most LATE_MS after it (`early` allows for time the
 * timer legitimately ran while the process was frozen). */
static void check_time(const char *what, int64_t at, int64_t want, int64_t early)
{
	int64_t d = at - want;
	check(d >= -early && d <= LATE_MS * MS, what, "%+.1f ms from the expected time",
	      (double)d / MS);
	say("%s: %+.1f ms\n", what, (double)d / MS);
}

static int timer_count(void)
{
	FILE *f = fopen("/proc/self/timers", "r");
	if (!f)
		return -1;
	char line[256];
	int n = 0;
	while (fgets(line, sizeof line, f))
		n += strncmp(line, "ID:", 3) == 0;
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "timers GO_FILE");
	const char *go = argv[1];

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	int sigs[] = { SIGUSR1,      SIGUSR2,      SIGRTMIN + 1, SIGRTMIN + 2,
		       SIGRTMIN + 3, SIGRTMIN + 4, SIGALRM,      SIGVTALRM };
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
		sigaction(sigs[i], &sa, NULL);
	sigset_t q;
	sigemptyset(&q);
	sigaddset(&q, SIGRTMIN + 3);
	sigaddset(&q, SIGRTMIN + 4);
	pthread_sigmask(SIG_BLOCK, &q, NULL);

	pthread_t th;
	pthread_create(&th, NULL, worker, NULL);
	while (!atomic_load(&worker_tid))
		nap_ms(1);
	pid_t wtid = atomic_load(&worker_tid);

	int64_t t0 = now_ns(CLOCK_MONOTONIC);
	timer_t a = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGUSR1, 0xa11ce, 0);
	timer_t gap_timer = make(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	timer_delete(gap_timer);
	timer_t b = make(CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 1, 0xb0b, wtid);
	timer_t c = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGUSR2, 0xc, 0);
	timer_t d = make(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	timer_t e = make(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 2, 0xe, 0);
	timer_t f = make(CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 0, 0, 0);
	timer_t qt = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 3, 0x9, 0);
	timer_t pt = make(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 4, 0x7, 0);
	struct sigevent gsev;
	memset(&gsev, 0, sizeof gsev);
	gsev.sigev_notify = SIGEV_THREAD;
	gsev.sigev_notify_function = on_thread_timer;
	gsev.sigev_value.sival_ptr = (void *)0x6;
	timer_t g;
	if (timer_create(CLOCK_MONOTONIC, &gsev, &g) != 0) {
		say("FAIL timer_create(SIGEV_THREAD): %s\n", strerror(errno));
		_exit(2);
	}

	int64_t a_at = t0 + 3000 * MS, b_at = t0 + 3200 * MS, d_at = t0 + 100000 * MS;
	arm(a, a_at - now_ns(CLOCK_MONOTONIC), 0);
	arm(b, b_at - now_ns(CLOCK_MONOTONIC), 300 * MS);
	arm(d, d_at - now_ns(CLOCK_MONOTONIC), 0);
	int64_t e_rt = now_ns(CLOCK_REALTIME) + 3400 * MS;
	struct itimerspec abs_e = { .it_value = { e_rt / 1000000000, e_rt % 1000000000 } };
	timer_settime(e, TIMER_ABSTIME, &abs_e, NULL);
	arm(f, 50000 * MS, 0);
	arm(qt, 1 * MS, 0);
	arm(pt, 1 * MS, 20 * MS);
	int64_t g_at = t0 + 3100 * MS;
	arm(g, g_at - now_ns(CLOCK_MONOTONIC), 0);
	int64_t r_at = t0 + 2800 * MS;
	int64_t r_in = r_at - now_ns(CLOCK_MONOTONIC);
	struct itimerval real = { .it_interval = { 0, 500000 },
				  .it_value = { r_in / 1000000000, (r_in % 1000000000) / 1000 } };
	struct itimerval virt = { .it_interval = { 1, 0 }, .it_value = { 100, 0 } };
	setitimer(ITIMER_REAL, &real, NULL);
	setitimer(ITIMER_VIRTUAL, &virt, NULL);
	for (int i = 0; i < 1000; i++) {
		sigset_t p;
		sigpending(&p);
		if (sigismember(&p, SIGRTMIN + 3) && sigismember(&p, SIGRTMIN + 4))
			break;
		nap_ms(1);
	}
	int64_t f_before = remaining(f, NULL);
	say("timer ids: a=%ld b=%ld c=%ld d=%ld e=%ld f=%ld q=%ld p=%ld g=%#lx (deleted %ld)\n",
	    (long)a, (long)b, (long)c, (long)d, (long)e, (long)f, (long)qt, (long)pt, (long)g,
	    (long)gap_timer);
	ready();

	/* Wait for the go file in 5 ms naps: those that took far longer straddle a time spent
	 * frozen (one per checkpoint when the test moves the process more than once). */
	int64_t gap = 0;
	for (long i = 0; i < 18000; i++) {
		int64_t before = now_ns(CLOCK_MONOTONIC);
		if (file_exists(go))
			break;
		nap_ms(5);
		int64_t after = now_ns(CLOCK_MONOTONIC);
		if (after - before > 30 * MS)
			gap += after - before;
	}
	int64_t back = now_ns(CLOCK_MONOTONIC);
	say("frozen for about %.1f ms, back %.1f ms after t0\n", (double)gap / MS,
	    (double)(back - t0) / MS);
	int early = atomic_load(&fa.count) + atomic_load(&fb.count) + atomic_load(&fe.count) +
		    atomic_load(&fr.count);
	check(early == 0, "no timer fired before the restore", "%d signals", early);

	/* Every timer id exists again, and only those. */
	timer_t all[] = { a, b, c, d, e, f, qt, pt, g };
	for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
		char what[64];
		snprintf(what, sizeof what, "timer %ld exists", (long)all[i]);
		check(remaining(all[i], NULL) >= 0, what, "%s", strerror(errno));
	}
	struct itimerspec its;
	check(timer_gettime(gap_timer, &its) != 0 && errno == EINVAL, "the deleted id stays free",
	      "timer_gettime(%ld) succeeded", (long)gap_timer);
	check(timer_count() == 9, "nine timers in /proc/self/timers", "%d", timer_count());

	/* Their values, read at once, are consistent with the time that passed. */
	int64_t interval = 0;
	int64_t ra = remaining(a, NULL), now = now_ns(CLOCK_MONOTONIC);
	check_time("A's remaining time", now + ra, a_at + gap, EARLY_MS * MS);
	int64_t rb = remaining(b, &interval);
	check(interval == 300 * MS, "B's interval", "%lld ns", (long long)interval);
	check_time("B's remaining time", now_ns(CLOCK_MONOTONIC) + rb, b_at + gap, EARLY_MS * MS);
	check(remaining(c, &interval) == 0 && interval == 0, "C stays disarmed", "armed");
	int64_t rd = remaining(d, NULL);
	check_time("D's remaining time (SIGEV_NONE)", now_ns(CLOCK_MONOTONIC) + rd, d_at + gap,
		   EARLY_MS * MS);
	int64_t re = remaining(e, NULL);
	check_time("E's remaining time (realtime)", now_ns(CLOCK_REALTIME) + re, e_rt, 5 * MS);
	int64_t rf = remaining(f, NULL);
	check(rf > 0 && rf <= f_before + 20 * MS && rf > f_before - 1000 * MS, "F's CPU time left",
	      "%lld ns, was %lld", (long long)rf, (long long)f_before);
	struct itimerval v;
	getitimer(ITIMER_VIRTUAL, &v);
	int64_t v_us = v.it_value.tv_sec * 1000000LL + v.it_value.tv_usec;
	/* CPU-time timers read up to a scheduler tick long (100.004 s just after arming). */
	check(v_us > 99000000 && v_us <= 100020000 && v.it_interval.tv_sec == 1,
	      "ITIMER_VIRTUAL's CPU time left", "%lld us, interval %ld s", (long long)v_us,
	      (long)v.it_interval.tv_sec);

	/* The queued signals of Q and P are delivered once each, P's after several periods. */
	nap_ms(60);
	pthread_sigmask(SIG_UNBLOCK, &q, NULL);
	int p_once = atomic_load(&fp.count);
	timer_delete(pt);
	check(p_once == 1 && fp.value == 0x7 && fp.timerid == (int)(long)pt,
	      "P's queued signal, once", "%d times, value %#lx, timer %d", p_once,
	      (unsigned long)fp.value, fp.timerid);
	nap_ms(20);
	check(atomic_load(&fq.count) == 1 && fq.value == 0x9 && fq.timerid == (int)(long)qt,
	      "Q's queued signal, once", "%d times, value %#lx, timer %d", atomic_load(&fq.count),
	      (unsigned long)fq.value, fq.timerid);

	/* Wait for A, B (twice), E and R (twice). */
	for (int i = 0; i < 1000; i++) {
		if (atomic_load(&fa.count) >= 1 && atomic_load(&fb.count) >= 2 &&
		    atomic_load(&fe.count) >= 1 && atomic_load(&fr.count) >= 2 &&
		    atomic_load(&fg.count) >= 1)
			break;
		nap_ms(5);
	}
	int64_t none_early = 0;
	check(atomic_load(&fa.count) == 1, "A fired once", "%d times", atomic_load(&fa.count));
	check_time("A fired on time", fa.first_ns, a_at + gap, EARLY_MS * MS);
	check(fa.value == 0xa11ce && fa.timerid == (int)(long)a, "A's sigev_value and id",
	      "value %#lx, timer %d", (unsigned long)fa.value, fa.timerid);
	check(fa.first_ns >= a_at, "A no earlier than its deadline", "%lld ns early",
	      (long long)(a_at - fa.first_ns));

	check(atomic_load(&fb.count) >= 2, "B fired twice", "%d times", atomic_load(&fb.count));
	check_time("B fired on time", fb.first_ns, b_at + gap, EARLY_MS * MS);
	check_time("B's period", fb.second_ns - fb.first_ns, 300 * MS, 5 * MS);
	check(fb.value == 0xb0b && fb.timerid == (int)(long)b && fb.tid == wtid,
	      "B's value, id and thread", "value %#lx, timer %d, thread %d (want %d)",
	      (unsigned long)fb.value, fb.timerid, (int)fb.tid, (int)wtid);

	check(atomic_load(&fg.count) == 1 && fg.value == 0x6, "G's callback ran once",
	      "%d times, value %#lx", atomic_load(&fg.count), (unsigned long)fg.value);
	check_time("G fired on time", fg.first_ns, g_at + gap, EARLY_MS * MS);

	check(atomic_load(&fe.count) == 1, "E fired once", "%d times", atomic_load(&fe.count));
	check_time("E fired at its wall-clock deadline", fe.first_rt_ns, e_rt, none_early);
	check(fe.value == 0xe && fe.timerid == (int)(long)e, "E's sigev_value and id",
	      "value %#lx, timer %d", (unsigned long)fe.value, fe.timerid);

	check(atomic_load(&fr.count) >= 2, "ITIMER_REAL fired twice", "%d times",
	      atomic_load(&fr.count));
	check_time("ITIMER_REAL fired on time", fr.first_ns, r_at + gap, EARLY_MS * MS);
	/* Measured between deliveries: a first signal delivered late on a loaded machine (the
	 * kernel reloads the timer at expiry, not at delivery) makes it look short, so it may
	 * be short by as much as a delivery may be late (50 ms, as for every timer here). */
	check_time("ITIMER_REAL's period", fr.second_ns - fr.first_ns, 500 * MS, 50 * MS);
	check(fr.first_ns >= r_at, "ITIMER_REAL no earlier than its deadline", "%lld ns early",
	      (long long)(r_at - fr.first_ns));
	check(atomic_load(&fv.count) == 0 && atomic_load(&fother.count) == 0,
	      "no other timer signal", "%d SIGVTALRM, %d others", atomic_load(&fv.count),
	      atomic_load(&fother.count));

	struct itimerval off = { { 0, 0 }, { 0, 0 } };
	setitimer(ITIMER_REAL, &off, NULL);
	setitimer(ITIMER_VIRTUAL, &off, NULL);
	atomic_store(&worker_stop, 1);
	pthread_join(th, NULL);
	finish();
}
