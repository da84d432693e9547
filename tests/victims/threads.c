/*
 * Per-thread state survives a checkpoint/restore of a multi-threaded process.
 *
 * Before "READY" the main thread starts ten threads, each holding some per-thread state and
 * most of them blocked in the kernel (main waits until each blocked one is asleep in its
 * syscall):
 *   sig-0, sig-1   distinct signal masks and distinct sigaltstacks; a SIGRTMIN+1 with a value
 *                  queued to sig-0 alone (pthread_sigqueue), blocked in every thread;
 *   futex          blocked in a raw FUTEX_WAIT on a private word;
 *   joiner/joinee  joiner blocked in pthread_timedjoin_np on joinee, which sleeps;
 *   cond           blocked in pthread_cond_timedwait;
 *   rb-owner       holds a robust mutex; rb-waiter is blocked locking it;
 *   avx-0, avx-1   keep distinct ymm (xmm without AVX2) values live in registers in an asm loop.
 * Every thread has its own name and records its tid. After the go file appears main checks,
 * thread by thread in a fixed order, that everything still holds and that each blocked thread
 * is released by what should release it (the robust-mutex waiter must get EOWNERDEAD once the
 * owner exits). Every wait is bounded and ends with a FAIL line.
 *
 * usage: threads GO_FILE
 */
#include "victim.h"
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

enum { SIG0, SIG1, FUTEX, JOINER, JOINEE, COND, RB_OWNER, RB_WAITER, AVX0, AVX1, NTHREADS };
static const char *names[NTHREADS] = { "sig-0",  "sig-1",   "futex",     "joiner", "joinee",
				       "cond",   "rb-owner", "rb-waiter", "avx-0",  "avx-1" };

static pthread_t threads[NTHREADS];
static volatile pid_t tids[NTHREADS];
static volatile int started[NTHREADS];
/* Main sets turn[i] to have thread i run its checks; the thread sets done[i] afterwards. */
static volatile int turn[NTHREADS], done[NTHREADS];
static volatile int go_seen;

#define ALT_SIZE (64 * 1024)
#define QUEUED_SIG (SIGRTMIN + 1)
#define QUEUED_VALUE 0x5eed1234

static void fail_setup(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	_exit(2);
}

static pid_t my_tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Waits (bounded, ~60 s) until *flag becomes nonzero; 0 on timeout. */
static int wait_flag(volatile int *flag)
{
	for (int i = 0; i < 6000; i++) {
		if (*flag)
			return 1;
		nap_ms(10);
	}
	return 0;
}

/* The start of every thread: name, tid, then waits for its turn after the restore. */
static void thread_begin(int i)
{
	char name[16];
	snprintf(name, sizeof name, "%s", names[i]);
	if (pthread_setname_np(pthread_self(), name) != 0)
		fail_setup("pthread_setname_np");
	tids[i] = my_tid();
	started[i] = 1;
}

static void check_tid(int i)
{
	pid_t now = my_tid();
	char what[64];
	snprintf(what, sizeof what, "%s gettid unchanged", names[i]);
	check(now == tids[i], what, "gettid() %d, before the checkpoint %d", (int)now, (int)tids[i]);
}

static void wait_turn(int i)
{
	if (!wait_flag(&turn[i])) {
		say("FAIL %s: never got its turn\n", names[i]);
		_exit(3);
	}
}

/* ---- signal masks, altstacks, a signal queued to one thread --------------------------- */

static char *alt[2];
static __thread volatile uintptr_t usr1_local;

static void on_usr1(int sig)
{
	volatile int local = sig;
	usr1_local = (uintptr_t)&local;
}

static void extra_mask(int i, sigset_t *s)
{
	sigemptyset(s);
	sigaddset(s, QUEUED_SIG);
	if (i == 0) {
		sigaddset(s, SIGUSR2);
		sigaddset(s, SIGRTMIN + 4);
	} else {
		sigaddset(s, SIGWINCH);
		sigaddset(s, SIGRTMIN + 3);
		sigaddset(s, SIGTTIN);
	}
}

static int same_mask(const sigset_t *a, const sigset_t *b, int *first_diff)
{
	for (int s = 1; s < 32; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return *first_diff = s, 0;
	for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
		if (sigismember(a, s) != sigismember(b, s))
			return *first_diff = s, 0;
	return 1;
}

static void *sig_thread(void *arg)
{
	int i = (int)(long)arg, idx = i == 0 ? SIG0 : SIG1;
	sigset_t want, now;
	extra_mask(i, &want);
	if (pthread_sigmask(SIG_SETMASK, &want, NULL) != 0)
		fail_setup("pthread_sigmask");
	stack_t ss = { .ss_sp = alt[i], .ss_size = ALT_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0)
		fail_setup("sigaltstack");
	thread_begin(idx);
	wait_turn(idx);

	check_tid(idx);
	pthread_sigmask(SIG_SETMASK, NULL, &now);
	int diff = 0;
	check(same_mask(&now, &want, &diff), i == 0 ? "sig-0 signal mask" : "sig-1 signal mask",
	      "signal %d differs", diff);
	stack_t old;
	memset(&old, 0xff, sizeof old);
	sigaltstack(NULL, &old);
	check(old.ss_sp == alt[i] && old.ss_size == ALT_SIZE && old.ss_flags == 0,
	      i == 0 ? "sig-0 sigaltstack" : "sig-1 sigaltstack", "sp %p size %zu flags %#x, want %p",
	      old.ss_sp, old.ss_size, old.ss_flags, (void *)alt[i]);
	usr1_local = 0;
	pthread_kill(pthread_self(), SIGUSR1);
	check(usr1_local >= (uintptr_t)alt[i] && usr1_local < (uintptr_t)alt[i] + ALT_SIZE,
	      i == 0 ? "sig-0 SA_ONSTACK handler on its own altstack"
		     : "sig-1 SA_ONSTACK handler on its own altstack",
	      "local at %#lx, stack %p", (unsigned long)usr1_local, (void *)alt[i]);

	sigset_t pend;
	sigpending(&pend);
	if (i == 1) {
		check(!sigismember(&pend, QUEUED_SIG), "queued signal not pending in sig-1",
		      "SIGRTMIN+1 is pending in sig-1 (moved to the shared queue?)");
	} else {
		check(sigismember(&pend, QUEUED_SIG), "queued signal pending in sig-0",
		      "SIGRTMIN+1 is not pending");
		sigset_t only;
		sigemptyset(&only);
		sigaddset(&only, QUEUED_SIG);
		siginfo_t si;
		memset(&si, 0, sizeof si);
		struct timespec t = { 2, 0 };
		int got = sigtimedwait(&only, &si, &t);
		check(got == QUEUED_SIG && si.si_code == SI_QUEUE &&
			      si.si_value.sival_int == QUEUED_VALUE && si.si_pid == getpid(),
		      "queued signal with its siginfo in sig-0",
		      "got %d (errno %d) code %d value %#x pid %d", got, errno, si.si_code,
		      si.si_value.sival_int, (int)si.si_pid);
		sigpending(&pend);
		check(!sigismember(&pend, QUEUED_SIG), "the queued signal came once",
		      "still pending");
	}
	done[idx] = 1;
	return NULL;
}

/* ---- futex -------------------------------------------------------------------------- */

static volatile int futex_word;

static void *futex_thread(void *arg)
{
	(void)arg;
	thread_begin(FUTEX);
	long woken = -1;
	int errs = 0;
	for (int k = 0; k < 100 && futex_word == 0; k++) {
		struct timespec t = { 60, 0 };
		woken = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &t, NULL, 0);
		if (woken != 0)
			errs++; /* EINTR after a restore is allowed; the loop goes on */
		if (woken != 0 && errno == ETIMEDOUT)
			break;
	}
	wait_turn(FUTEX);
	check_tid(FUTEX);
	check(futex_word == 1, "futex waiter released by FUTEX_WAKE", "word %d, last %ld errno %d",
	      futex_word, woken, errno);
	done[FUTEX] = 1;
	return NULL;
}

/* ---- pthread_join ------------------------------------------------------------------- */

static volatile int joinee_release;

static void *joinee_thread(void *arg)
{
	(void)arg;
	thread_begin(JOINEE);
	wait_turn(JOINEE);
	check_tid(JOINEE);
	done[JOINEE] = 1;
	return (void *)0x77;
}

static void *joiner_thread(void *arg)
{
	(void)arg;
	thread_begin(JOINER);
	while (!started[JOINEE])
		nap_ms(1);
	void *ret = NULL;
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 60;
	int r = pthread_timedjoin_np(threads[JOINEE], &ret, &dl);
	wait_turn(JOINER);
	check_tid(JOINER);
	check(r == 0 && ret == (void *)0x77, "pthread_join across the checkpoint",
	      "returned %d (%s), value %p", r, strerror(r), ret);
	done[JOINER] = 1;
	return NULL;
}

/* ---- pthread_cond_timedwait --------------------------------------------------------- */

static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int cond_ready;
static volatile int cond_waiting;

static void *cond_thread(void *arg)
{
	(void)arg;
	thread_begin(COND);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 60;
	int r = 0, wakeups = 0;
	pthread_mutex_lock(&cond_lock);
	cond_waiting = 1;
	while (!cond_ready && r == 0) {
		r = pthread_cond_timedwait(&cond, &cond_lock, &dl);
		wakeups++;
	}
	int ok = cond_ready;
	pthread_mutex_unlock(&cond_lock);
	wait_turn(COND);
	check_tid(COND);
	check(ok && r == 0, "pthread_cond_timedwait woken by the signal",
	      "ready %d, returned %d (%s) after %d wakeups", ok, r, strerror(r), wakeups);
	done[COND] = 1;
	return NULL;
}

/* ---- robust mutex ------------------------------------------------------------------- */

static pthread_mutex_t robust;
static volatile int rb_locked;

static void *rb_owner_thread(void *arg)
{
	(void)arg;
	if (pthread_mutex_lock(&robust) != 0)
		fail_setup("robust lock");
	rb_locked = 1;
	thread_begin(RB_OWNER);
	wait_turn(RB_OWNER);
	check_tid(RB_OWNER);
	done[RB_OWNER] = 1;
	return NULL; /* exits holding the lock: the kernel's robust-list walk marks it */
}

static void *rb_waiter_thread(void *arg)
{
	(void)arg;
	thread_begin(RB_WAITER);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 60;
	int r = pthread_mutex_timedlock(&robust, &dl);
	wait_turn(RB_WAITER);
	check_tid(RB_WAITER);
	check(r == EOWNERDEAD, "robust mutex waiter gets EOWNERDEAD", "returned %d (%s)", r,
	      strerror(r));
	if (r == EOWNERDEAD) {
		pthread_mutex_consistent(&robust);
		pthread_mutex_unlock(&robust);
		check(pthread_mutex_trylock(&robust) == 0, "robust mutex usable again", "trylock");
		pthread_mutex_unlock(&robust);
	}
	done[RB_WAITER] = 1;
	return NULL;
}

/* ---- per-thread vector registers ---------------------------------------------------- */

#define AVX_ITERS 20000000ULL
struct vec {
	uint64_t init[16][4] __attribute__((aligned(32)));
	uint64_t delta[4] __attribute__((aligned(32)));
	uint64_t out[16][4] __attribute__((aligned(32)));
	long chunks, bad;
	char first_bad[160];
};
static struct vec vecs[2];
static int use_ymm;

#define L15(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14)
#define YLOAD(i) "vmovdqu " #i "*32(%[in]), %%ymm" #i "\n\t"
#define YADD(i) "vpaddq %%ymm15, %%ymm" #i ", %%ymm" #i "\n\t"
#define YSTORE(i) "vmovdqu %%ymm" #i ", " #i "*32(%[out])\n\t"
#define XLOAD(i) "movdqu " #i "*32(%[in]), %%xmm" #i "\n\t"
#define XADD(i) "paddq %%xmm15, %%xmm" #i "\n\t"
#define XSTORE(i) "movdqu %%xmm" #i ", " #i "*32(%[out])\n\t"
#define VCLOBBERS                                                                            \
	"memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", \
		"xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

__attribute__((target("avx2"))) static void ymm_chunk(struct vec *v, uint64_t n)
{
	__asm__ volatile(L15(YLOAD) "vmovdqu (%[d]), %%ymm15\n\t"
				    "1:\n\t" L15(YADD) "dec %[n]\n\t"
				    "jnz 1b\n\t" L15(YSTORE) "vzeroupper\n\t"
			 : [n] "+r"(n)
			 : [in] "r"(v->init), [d] "r"(v->delta), [out] "r"(v->out)
			 : VCLOBBERS);
}

static void xmm_chunk(struct vec *v, uint64_t n)
{
	__asm__ volatile(L15(XLOAD) "movdqu (%[d]), %%xmm15\n\t"
				    "1:\n\t" L15(XADD) "dec %[n]\n\t"
				    "jnz 1b\n\t" L15(XSTORE)
			 : [n] "+r"(n)
			 : [in] "r"(v->init), [d] "r"(v->delta), [out] "r"(v->out)
			 : VCLOBBERS);
}

static void vec_chunk(struct vec *v, int k)
{
	memset(v->out, 0, sizeof v->out);
	if (use_ymm)
		ymm_chunk(v, AVX_ITERS);
	else
		xmm_chunk(v, AVX_ITERS);
	int lanes = use_ymm ? 4 : 2;
	for (int r = 0; r < 15; r++)
		for (int l = 0; l < lanes; l++) {
			uint64_t want = v->init[r][l] + AVX_ITERS * v->delta[l];
			if (v->out[r][l] != want && v->bad++ == 0)
				snprintf(v->first_bad, sizeof v->first_bad,
					 "avx-%d reg %d lane %d: got %#llx want %#llx (chunk %ld)", k,
					 r, l, (unsigned long long)v->out[r][l],
					 (unsigned long long)want, v->chunks);
		}
	v->chunks++;
}

static void *avx_thread(void *arg)
{
	int k = (int)(long)arg, idx = AVX0 + k;
	struct vec *v = &vecs[k];
	uint64_t x = 0x0123456789abcdefULL * (uint64_t)(k + 3);
	for (int r = 0; r < 16; r++)
		for (int l = 0; l < 4; l++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			v->init[r][l] = x;
		}
	for (int l = 0; l < 4; l++)
		v->delta[l] = 0x9e3779b97f4a7c15ULL * (uint64_t)(l + 1 + 8 * k);
	thread_begin(idx);
	/* Busy in registers until main says go (turn), at most ~5000 chunks. */
	for (long n = 0; !go_seen && n < 5000; n++)
		vec_chunk(v, k);
	vec_chunk(v, k); /* one whole chunk after the restore too */
	wait_turn(idx);
	check_tid(idx);
	check(v->chunks >= 2 && v->bad == 0,
	      k == 0 ? "avx-0 vector registers" : "avx-1 vector registers", "%ld bad lanes, first: %s",
	      v->bad, v->first_bad);
	done[idx] = 1;
	return NULL;
}

/* ---- main --------------------------------------------------------------------------- */

/* Waits until thread i sleeps in the kernel in syscall `nr` (from /proc/self/task/TID/syscall). */
static void wait_blocked(int i, long nr)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tids[i]);
	for (int k = 0; k < 3000; k++) {
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = 0;
			if (strtol(buf, NULL, 10) == nr)
				return;
		}
		nap_ms(2);
	}
	say("SETUP-FAILED %s never blocked in syscall %ld\n", names[i], nr);
	_exit(2);
}

static void start(int i, void *(*fn)(void *), long arg)
{
	if (pthread_create(&threads[i], NULL, fn, (void *)arg) != 0)
		fail_setup("pthread_create");
	for (int k = 0; k < 5000 && !started[i]; k++)
		nap_ms(1);
	if (!started[i]) {
		say("SETUP-FAILED %s did not start\n", names[i]);
		_exit(2);
	}
}

static void run_turn(int i)
{
	turn[i] = 1;
	if (!wait_flag(&done[i])) {
		say("FAIL %s: its checks never finished\n", names[i]);
		_exit(3);
	}
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "threads GO_FILE");
	__builtin_cpu_init();
	use_ymm = __builtin_cpu_supports("avx2");
	say("TESTING %s\n", use_ymm ? "ymm" : "xmm");
	say("PID %d\n", (int)getpid());

	sigset_t base;
	sigemptyset(&base);
	sigaddset(&base, QUEUED_SIG);
	pthread_sigmask(SIG_BLOCK, &base, NULL); /* inherited by every thread */
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	for (int i = 0; i < 2; i++) {
		alt[i] = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			      -1, 0);
		if (alt[i] == MAP_FAILED)
			fail_setup("mmap");
	}
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&robust, &ma);

	start(SIG0, sig_thread, 0);
	start(SIG1, sig_thread, 1);
	start(FUTEX, futex_thread, 0);
	start(JOINEE, joinee_thread, 0);
	start(JOINER, joiner_thread, 0);
	start(COND, cond_thread, 0);
	start(RB_OWNER, rb_owner_thread, 0);
	start(RB_WAITER, rb_waiter_thread, 0);
	start(AVX0, avx_thread, 0);
	start(AVX1, avx_thread, 1);

	union sigval sv = { .sival_int = QUEUED_VALUE };
	if (pthread_sigqueue(threads[SIG0], QUEUED_SIG, sv) != 0)
		fail_setup("pthread_sigqueue");
	wait_blocked(FUTEX, SYS_futex);
	wait_blocked(JOINER, SYS_futex);
	wait_blocked(COND, SYS_futex);
	wait_blocked(RB_WAITER, SYS_futex);
	while (!cond_waiting)
		nap_ms(1);

	ready();
	wait_go(argv[1], 0);
	go_seen = 1;

	/* Every thread is still there with its tid, its name, and reachable through its pthread_t. */
	for (int i = 0; i < NTHREADS; i++) {
		char got[32] = "", path[64], comm[32] = "", what[96];
		int r = pthread_getname_np(threads[i], got, sizeof got);
		snprintf(what, sizeof what, "%s pthread_getname_np", names[i]);
		check(r == 0 && !strcmp(got, names[i]), what, "%d '%s'", r, got);
		snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tids[i]);
		int fd = open(path, O_RDONLY);
		ssize_t n = fd >= 0 ? read(fd, comm, sizeof comm - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n > 0 && comm[n - 1] == '\n')
			comm[n - 1] = 0;
		snprintf(what, sizeof what, "%s comm in /proc/self/task/%d", names[i], (int)tids[i]);
		check(n > 0 && !strcmp(comm, names[i]), what,
		      "%s: '%s' (%s)", path, comm, n < 0 ? strerror(errno) : "read");
		snprintf(what, sizeof what, "%s pthread_kill", names[i]);
		check(pthread_kill(threads[i], 0) == 0, what, "failed");
		struct sched_param sp;
		int pol = -1;
		r = pthread_getschedparam(threads[i], &pol, &sp);
		snprintf(what, sizeof what, "%s pthread_getschedparam", names[i]);
		check(r == 0 && pol == SCHED_OTHER, what, "%d policy %d", r, pol);
	}

	run_turn(SIG1); /* before sig-0 consumes its queued signal */
	run_turn(SIG0);

	futex_word = 1;
	syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	run_turn(FUTEX);

	run_turn(JOINEE); /* returns: the joiner's pthread_join ends */
	run_turn(JOINER);

	pthread_mutex_lock(&cond_lock);
	cond_ready = 1;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&cond_lock);
	run_turn(COND);

	run_turn(RB_OWNER); /* exits holding the robust mutex */
	run_turn(RB_WAITER);

	run_turn(AVX0);
	run_turn(AVX1);

	for (int i = 0; i < NTHREADS; i++)
		if (i != JOINEE)
			pthread_join(threads[i], NULL);
	check(my_tid() == getpid(), "main thread tid", "%d vs pid %d", (int)my_tid(), (int)getpid());
	finish();
}
