/*
 * Event objects an event loop holds, set up with known state before READY and checked after
 * the restore.
 *
 * usage: events GO_FILE MODE
 * MODE eventfd: a plain eventfd holding 5 (non-blocking), a semaphore eventfd holding 3 and an
 *   empty one; after the go file: 5 then EAGAIN, 1 three times then EAGAIN, the flags kept.
 * MODE timerfd: a monotonic timer armed 2 s ahead, a realtime timer armed on an absolute time
 *   2.2 s ahead, an interval timer (100 ms) that has expired unread several times, a one-shot
 *   timer that expired once unread, a disarmed one. After the go file: each armed timer fires
 *   no earlier than its deadline and at most 50 ms later than the deadline plus the time the
 *   process was frozen (the largest gap seen between two turns of its wait loop); the unread
 *   expirations are still there (exactly 1 for the one-shot, at least as many as fdinfo
 *   showed before READY for the interval timer), the interval and clock are kept.
 * MODE signalfd: SIGUSR1 and SIGUSR2 blocked, a non-blocking signalfd for both; SIGUSR2 sent
 *   before READY waits in the queue. After the go file it reads SIGUSR2, then SIGUSR1 sent
 *   after the restore, then EAGAIN.
 * MODE epoll: one epoll instance watching a pipe with bytes (data 1), an eventfd holding 1
 *   (data 2), a timerfd that expired (data 3), a socketpair end with bytes (data 4), an empty
 *   pipe (data 5), an eventfd registered under a number since closed (it lives on a dup; data
 *   6), a oneshot eventfd whose event was already taken (data 7, disarmed), an edge-triggered
 *   socket with bytes (data 8). After the go file, epoll_wait reports exactly 1, 2, 3, 4, 6 and
 *   8 with EPOLLIN; EPOLL_CTL_MOD works under the original numbers and fails (ENOENT) under
 *   the new number of the dup'ed eventfd; writing into the empty pipe makes 5 ready.
 * MODE nested: an outer epoll watching an inner epoll (data 100) that watches a pipe with bytes
 *   (data 101), and a second inner epoll with nothing ready (data 102). After the go file the
 *   outer reports only 100, the inner 101.
 * MODE inotify: watches on directories w1 (wd 1, IN_CREATE) and w2 (wd 3, IN_CREATE |
 *   IN_DELETE; wd 2 was added and removed, its IN_IGNORED event read). After the go file,
 *   files created in w2 and w1 are reported with wd 3 and wd 1 and their names.
 */
#include "victim.h"
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

static void die(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	exit(2);
}

static int64_t now(clockid_t c)
{
	struct timespec t;
	clock_gettime(c, &t);
	return ts_ns(&t);
}

/* The largest gap between two turns of the wait loop: how long the process was frozen. */
static int64_t frozen_ns;

static void wait_go_timed(const char *go)
{
	int64_t prev = now(CLOCK_MONOTONIC);
	for (long i = 0; i < 18000; i++) {
		if (file_exists(go))
			return;
		nap_ms(5);
		int64_t t = now(CLOCK_MONOTONIC);
		if (t - prev > frozen_ns)
			frozen_ns = t - prev;
		prev = t;
	}
	say("FAIL wait_go: %s never appeared\n", go);
	_exit(3);
}

static uint64_t fdinfo_u64(int fd, const char *key)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	if (f < 0)
		return 0;
	ssize_t n = read(f, buf, sizeof buf - 1);
	close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *p = strstr(buf, key);
	return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static int read_u64(int fd, uint64_t *v)
{
	ssize_t n = read(fd, v, sizeof *v);
	return n == (ssize_t)sizeof *v ? 0 : (n < 0 ? -errno : -EIO);
}

static void put_u64(int fd, uint64_t v)
{
	if (write(fd, &v, sizeof v) != (ssize_t)sizeof v)
		die("eventfd write");
}

static void arm(int fd, int flags, int64_t value_ns, int64_t interval_ns)
{
	struct itimerspec its = {
		.it_interval = { interval_ns / 1000000000, interval_ns % 1000000000 },
		.it_value = { value_ns / 1000000000, value_ns % 1000000000 },
	};
	if (timerfd_settime(fd, flags, &its, NULL) != 0)
		die("timerfd_settime");
}

static void eventfd_mode(const char *go)
{
	int plain = eventfd(5, EFD_NONBLOCK);
	int sem = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
	int empty = eventfd(0, 0);
	if (plain < 0 || sem < 0 || empty < 0)
		die("eventfd");
	put_u64(sem, 3);
	ready();
	wait_go(go, 0);
	uint64_t v = 0;
	int r = read_u64(plain, &v);
	check(r == 0 && v == 5, "eventfd counter", "read %d value %llu", r, (unsigned long long)v);
	r = read_u64(plain, &v);
	check(r == -EAGAIN, "eventfd empty after reading", "read %d", r);
	int ones = 0;
	while (read_u64(sem, &v) == 0 && v == 1)
		ones++;
	check(ones == 3, "semaphore eventfd gives 1 three times", "%d", ones);
	check(fcntl(plain, F_GETFL) & O_NONBLOCK, "eventfd O_NONBLOCK kept", "flags %o", fcntl(plain, F_GETFL));
	check(!(fcntl(empty, F_GETFL) & O_NONBLOCK), "blocking eventfd stays blocking", "flags %o",
	      fcntl(empty, F_GETFL));
	put_u64(empty, 9);
	r = read_u64(empty, &v);
	check(r == 0 && v == 9, "eventfd still counts", "read %d value %llu", r, (unsigned long long)v);
}

/* Blocks until `fd` fires; its expirations and the time it fired (on `clock`). */
static uint64_t wait_fire(int fd, clockid_t clock, int64_t *at)
{
	uint64_t ticks = 0;
	int r = read_u64(fd, &ticks);
	*at = now(clock);
	return r == 0 ? ticks : 0;
}

static void check_deadline(const char *what, int64_t fired, int64_t deadline)
{
	int64_t late = fired - deadline - frozen_ns;
	check(fired >= deadline && late <= 50000000LL, what,
	      "fired %lld ms after the deadline; frozen %lld ms, late by %lld ms", (long long)(fired - deadline) / 1000000,
	      (long long)frozen_ns / 1000000, (long long)late / 1000000);
}

static void timerfd_mode(const char *go)
{
	int mono = timerfd_create(CLOCK_MONOTONIC, 0);
	int real = timerfd_create(CLOCK_REALTIME, 0);
	int every = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int once = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
	int off = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	if (mono < 0 || real < 0 || every < 0 || once < 0 || off < 0)
		die("timerfd_create");
	arm(every, 0, 100000000, 100000000);
	arm(once, 0, 1000000, 0);
	nap_ms(350);
	int64_t mono_deadline = now(CLOCK_MONOTONIC) + 2000000000LL;
	arm(mono, 0, 2000000000LL, 0);
	int64_t real_deadline = now(CLOCK_REALTIME) + 2200000000LL;
	arm(real, TFD_TIMER_ABSTIME, real_deadline, 0);
	/* fdinfo counts an interval timer's expirations lazily: asking the time brings it up to date. */
	struct itimerspec cur;
	timerfd_gettime(every, &cur);
	uint64_t every_ticks = fdinfo_u64(every, "ticks:");
	ready();
	wait_go_timed(go);
	uint64_t v = 0;
	int r = read_u64(once, &v);
	check(r == 0 && v == 1, "expired one-shot timer holds 1 expiration", "read %d value %llu", r,
	      (unsigned long long)v);
	r = read_u64(once, &v);
	check(r == -EAGAIN, "and then none", "read %d", r);
	r = read_u64(every, &v);
	check(r == 0 && v >= every_ticks && every_ticks >= 2, "interval timer keeps its unread expirations",
	      "read %d value %llu, %llu before READY", r, (unsigned long long)v, (unsigned long long)every_ticks);
	timerfd_gettime(every, &cur);
	check(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 100000000, "interval kept", "%ld.%09ld",
	      (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
	timerfd_gettime(off, &cur);
	check(cur.it_value.tv_sec == 0 && cur.it_value.tv_nsec == 0, "disarmed timer stays disarmed", "%ld.%09ld",
	      (long)cur.it_value.tv_sec, cur.it_value.tv_nsec);
	r = read_u64(off, &v);
	check(r == -EAGAIN, "disarmed timer has nothing to read", "read %d", r);
	int64_t at;
	v = wait_fire(mono, CLOCK_MONOTONIC, &at);
	check(v == 1, "monotonic timer fires once", "%llu", (unsigned long long)v);
	check_deadline("monotonic timer fires on time", at, mono_deadline);
	v = wait_fire(real, CLOCK_REALTIME, &at);
	check(v == 1, "realtime timer fires once", "%llu", (unsigned long long)v);
	check_deadline("absolute realtime timer fires on time", at, real_deadline);
	check(fdinfo_u64(once, "clockid:") == CLOCK_BOOTTIME, "clock kept", "clockid %llu",
	      (unsigned long long)fdinfo_u64(once, "clockid:"));
}

static void signalfd_mode(const char *go)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
		die("sigprocmask");
	int sfd = signalfd(-1, &set, SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd");
	kill(getpid(), SIGUSR2);
	ready();
	wait_go(go, 0);
	struct signalfd_siginfo si;
	ssize_t n = read(sfd, &si, sizeof si);
	check(n == sizeof si && si.ssi_signo == SIGUSR2, "signalfd reads the signal queued before", "n %zd signo %u",
	      n, n > 0 ? si.ssi_signo : 0);
	kill(getpid(), SIGUSR1);
	n = read(sfd, &si, sizeof si);
	check(n == sizeof si && si.ssi_signo == SIGUSR1, "signalfd reads a signal sent after the restore",
	      "n %zd signo %u", n, n > 0 ? si.ssi_signo : 0);
	n = read(sfd, &si, sizeof si);
	check(n < 0 && errno == EAGAIN, "then nothing (non-blocking kept)", "n %zd", n);
}

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		die("epoll_ctl");
}

/* The data of the ready items of `ep` as a bit set (bit n for data n < 64), and their events. */
static uint64_t ready_set(int ep, uint32_t *all_events)
{
	struct epoll_event evs[16];
	int n = epoll_wait(ep, evs, 16, 0);
	uint64_t set = 0;
	*all_events = 0;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.u64 < 64)
			set |= 1ULL << evs[i].data.u64;
		else
			set |= 1ULL << 63;
		*all_events |= evs[i].events;
	}
	return set;
}

static void epoll_mode(const char *go)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int full[2], empty[2], sp[2], et[2];
	if (ep < 0 || pipe(full) || pipe(empty) || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, et))
		die("setup");
	int ev1 = eventfd(1, 0);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	int moved = eventfd(4, 0);
	int shot = eventfd(1, 0);
	if (ev1 < 0 || tfd < 0 || moved < 0 || shot < 0)
		die("objects");
	write_all(full[1], "abc", 3);
	write_all(sp[1], "xyz", 3);
	arm(tfd, 0, 1000000, 0);
	add(ep, full[0], EPOLLIN, 1);
	add(ep, ev1, EPOLLIN, 2);
	add(ep, tfd, EPOLLIN, 3);
	add(ep, sp[0], EPOLLIN, 4);
	add(ep, empty[0], EPOLLIN, 5);
	add(ep, moved, EPOLLIN, 6);
	int moved_to = dup(moved);
	int moved_was = moved;
	close(moved);
	add(ep, shot, EPOLLIN | EPOLLONESHOT, 7);
	add(ep, et[0], EPOLLIN | EPOLLET, 8);
	write_all(et[1], "e", 1);
	nap_ms(20);
	uint32_t events;
	uint64_t before = ready_set(ep, &events);
	if (before != ((1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 8)))
		say("SETUP-FAILED epoll before READY: %llx\n", (unsigned long long)before);
	/* The edge was reported, the oneshot disarmed; level-triggered items stay ready. */
	write_all(et[1], "f", 1);
	ready();
	wait_go(go, 0);
	uint64_t after = ready_set(ep, &events);
	uint64_t want = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 8);
	check(after == want, "epoll reports the ready targets by their data", "got %llx want %llx",
	      (unsigned long long)after, (unsigned long long)want);
	check(events == EPOLLIN, "with EPOLLIN", "events %x", events);
	after = ready_set(ep, &events);
	want &= ~(1ULL << 8);
	check(after == want, "the edge-triggered one only once", "got %llx want %llx", (unsigned long long)after,
	      (unsigned long long)want);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 11 };
	check(epoll_ctl(ep, EPOLL_CTL_MOD, full[0], &ev) == 0, "EPOLL_CTL_MOD under the original number",
	      "%s", strerror(errno));
	int r = epoll_ctl(ep, EPOLL_CTL_MOD, moved_to, &ev);
	check(r < 0 && errno == ENOENT, "the dup'ed eventfd is registered under its old number only", "r %d",
	      r);
	(void)moved_was;
	write_all(empty[1], "q", 1);
	after = ready_set(ep, &events);
	check(after & (1 << 5), "a pipe written after the restore becomes ready", "got %llx",
	      (unsigned long long)after);
	check(after & (1 << 11), "under its new data", "got %llx", (unsigned long long)after);
}

static void nested_mode(const char *go)
{
	int outer = epoll_create1(0);
	int inner = epoll_create1(0);
	int idle = epoll_create1(0);
	int p[2], q[2];
	if (outer < 0 || inner < 0 || idle < 0 || pipe(p) || pipe(q))
		die("setup");
	write_all(p[1], "n", 1);
	add(inner, p[0], EPOLLIN, 101);
	add(idle, q[0], EPOLLIN, 103);
	add(outer, inner, EPOLLIN, 100);
	add(outer, idle, EPOLLIN, 102);
	ready();
	wait_go(go, 0);
	struct epoll_event evs[4];
	int n = epoll_wait(outer, evs, 4, 1000);
	check(n == 1 && evs[0].data.u64 == 100, "outer epoll reports the inner one", "n %d data %llu", n,
	      n > 0 ? (unsigned long long)evs[0].data.u64 : 0ULL);
	n = epoll_wait(inner, evs, 4, 0);
	check(n == 1 && evs[0].data.u64 == 101, "inner epoll reports its pipe", "n %d", n);
	write_all(q[1], "m", 1);
	n = epoll_wait(outer, evs, 4, 1000);
	uint64_t seen = 0;
	for (int i = 0; i < n; i++)
		seen |= evs[i].data.u64 == 102 ? 1 : 0;
	check(seen, "the idle inner epoll becomes ready through the outer one", "n %d", n);
}

static void inotify_mode(const char *go)
{
	if (mkdir("w1", 0755) && errno != EEXIST)
		die("mkdir w1");
	if (mkdir("w2", 0755) && errno != EEXIST)
		die("mkdir w2");
	int in = inotify_init1(IN_NONBLOCK);
	if (in < 0)
		die("inotify_init1");
	int wd1 = inotify_add_watch(in, "w1", IN_CREATE);
	int gone = inotify_add_watch(in, "w2", IN_CREATE);
	inotify_rm_watch(in, gone);
	int wd3 = inotify_add_watch(in, "w2", IN_CREATE | IN_DELETE);
	if (wd1 != 1 || gone != 2 || wd3 != 3)
		say("SETUP-FAILED watch descriptors %d %d %d\n", wd1, gone, wd3);
	char buf[4096];
	while (read(in, buf, sizeof buf) > 0)
		;
	ready();
	wait_go(go, 0);
	close(open("w2/x", O_CREAT | O_WRONLY, 0644));
	close(open("w1/y", O_CREAT | O_WRONLY, 0644));
	unlink("w2/x");
	nap_ms(20);
	ssize_t n = read(in, buf, sizeof buf);
	int seen_x = 0, seen_y = 0, seen_del = 0, other = 0;
	for (ssize_t off = 0; off < n;) {
		struct inotify_event *e = (struct inotify_event *)(buf + off);
		if (e->wd == 3 && (e->mask & IN_CREATE) && !strcmp(e->name, "x"))
			seen_x++;
		else if (e->wd == 1 && (e->mask & IN_CREATE) && !strcmp(e->name, "y"))
			seen_y++;
		else if (e->wd == 3 && (e->mask & IN_DELETE) && !strcmp(e->name, "x"))
			seen_del++;
		else
			other++;
		off += sizeof *e + e->len;
	}
	check(seen_x == 1, "inotify reports a file created in w2 with wd 3", "n %zd", n);
	check(seen_y == 1, "inotify reports a file created in w1 with wd 1", "n %zd", n);
	check(seen_del == 1, "and the deletion, as its mask asks", "n %zd", n);
	check(other == 0, "and nothing else", "%d other events", other);
	check(fcntl(in, F_GETFL) & O_NONBLOCK, "O_NONBLOCK kept", "flags %o", fcntl(in, F_GETFL));
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "events GO_FILE eventfd|timerfd|signalfd|epoll|nested|inotify");
	const char *go = argv[1], *mode = argv[2];
	if (!strcmp(mode, "eventfd"))
		eventfd_mode(go);
	else if (!strcmp(mode, "timerfd"))
		timerfd_mode(go);
	else if (!strcmp(mode, "signalfd"))
		signalfd_mode(go);
	else if (!strcmp(mode, "epoll"))
		epoll_mode(go);
	else if (!strcmp(mode, "nested"))
		nested_mode(go);
	else if (!strcmp(mode, "inotify"))
		inotify_mode(go);
	else
		usage_if(1, "unknown mode");
	finish();
}
