/*
 * A process holding one kind of state that `mrunctl checkpoint` must refuse (or, for modes
 * that are supported now, checkpoint), which then keeps doing observable work so the test can
 * prove the refusal left it untouched.
 *
 * After setting up MODE it prints "READY", then "tick N" every 50 ms. When STOP_FILE appears it
 * checks that the state still works (the thread still runs, the child still exits 0, the socket
 * still carries data, the timer is still armed...), prints PASS/FAIL lines and exits (0 if all
 * passed). It gives up after about 120 s.
 *
 * usage: refuse MODE STOP_FILE [DIR]
 * MODE: plain threads child zombie socketpair unixconnect unixlisten scm_rights tcp shared_anon
 *       shared_file sysv_shm epoll eventfd signalfd timerfd inotify inotify_queued io_uring
 *       itimer posix_timer thread_cpu_timer orphan_timer shstk
 * inotify_queued: an inotify watch on DIR with an event (a file created) not read yet.
 * itimer, posix_timer: armed timers (carried now, no longer refused: the tests restore them).
 * thread_cpu_timer: a POSIX timer on the creating thread's CPU-time clock.
 * orphan_timer: a POSIX timer a thread aimed at itself (SIGEV_THREAD_ID) before it exited.
 * shstk: a thread enables an x86 shadow stack and spins; before "READY" the victim prints
 * "SHSTK-ON", or "SHSTK-UNAVAILABLE <errno>" (then it is a plain victim with one idle thread).
 * DIR (shared_file, inotify, inotify_queued, unixlisten): a directory the victim may create files in.
 * unixconnect: a unix stream socket connected to DIR/outside.sock, where the test listens.
 * unixlisten: a unix stream socket listening on DIR/listen.sock; at the end it connects to it
 *   and accepts its own connection (skipping one the test may have left waiting).
 * scm_rights: a datagram socketpair with two messages queued, the second carrying a pipe's read
 * end (SCM_RIGHTS).
 */
#include "victim.h"
#include <arpa/inet.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>

static const char *mode, *stop_file, *dir;
static int fds[4] = { -1, -1, -1, -1 };
static char *mem;
static pid_t child = -1;
static timer_t posix_timer;
static volatile sig_atomic_t alarms, usr1s;

#define THREADS 3
static pthread_t threads[THREADS];
static volatile long thread_counts[THREADS];
static volatile int threads_stop;

static void *orphan_timer_main(void *arg)
{
	(void)arg;
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGUSR1;
	sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	struct itimerspec its = { .it_value = { 1000, 0 } };
	if (timer_create(CLOCK_MONOTONIC, &sev, &posix_timer) != 0 ||
	    timer_settime(posix_timer, 0, &its, NULL) != 0)
		return (void *)1;
	return NULL;
}

static void *thread_main(void *arg)
{
	long i = (long)arg;
	while (!threads_stop) {
		thread_counts[i]++;
		nap_ms(5);
	}
	return NULL;
}

#define ARCH_SHSTK_ENABLE 0x5001
#define ARCH_SHSTK_SHSTK 1
static volatile long shstk_status; /* 0 not yet, 1 enabled, -errno failed */
static volatile unsigned long shstk_spins;

/*
 * Enables the shadow stack of the calling thread with a raw arch_prctl and never returns once
 * it is on: returning (or any call made before enabling that returns after) would fault, so
 * the loop makes no calls at all.
 */
__attribute__((noinline, noreturn)) static void shstk_spin(void)
{
	long r;
	__asm__ volatile("syscall"
			 : "=a"(r)
			 : "0"(158L /* SYS_arch_prctl */), "D"((long)ARCH_SHSTK_ENABLE),
			   "S"((long)ARCH_SHSTK_SHSTK)
			 : "rcx", "r11", "memory");
	if (r != 0) {
		shstk_status = r < 0 ? r : -1;
		for (;;)
			__asm__ volatile("pause" ::: "memory"); /* idle, shadow stack off */
	}
	shstk_status = 1;
	for (;;) {
		for (volatile int k = 0; k < 100000; k++)
			;
		shstk_spins++;
	}
}

static void *shstk_main(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	shstk_spin();
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void on_usr1(int sig)
{
	(void)sig;
	usr1s++;
}

static void die(const char *what)
{
	say("SETUP-FAILED %s: %s\n", what, strerror(errno));
	exit(2);
}

static void path_in_dir(char *buf, size_t len, const char *name)
{
	if (!dir) {
		say("SETUP-FAILED mode %s needs DIR\n", mode);
		exit(2);
	}
	snprintf(buf, len, "%s/%s", dir, name);
}

static void setup(void)
{
	char path[4096];
	if (!strcmp(mode, "plain")) {
	} else if (!strcmp(mode, "threads")) {
		for (long i = 0; i < THREADS; i++)
			if (pthread_create(&threads[i], NULL, thread_main, (void *)i) != 0)
				die("pthread_create");
	} else if (!strcmp(mode, "shstk")) {
		if (pthread_create(&threads[0], NULL, shstk_main, NULL) != 0)
			die("pthread_create");
		for (int i = 0; i < 2000 && shstk_status == 0; i++)
			nap_ms(1);
		if (shstk_status == 1)
			say("SHSTK-ON\n");
		else
			say("SHSTK-UNAVAILABLE %ld\n", -shstk_status);
	} else if (!strcmp(mode, "child")) {
		child = fork();
		if (child < 0)
			die("fork");
		if (child == 0) {
			for (int i = 0; i < 12000 && !file_exists(stop_file); i++)
				nap_ms(10);
			_exit(0);
		}
	} else if (!strcmp(mode, "zombie")) {
		child = fork();
		if (child < 0)
			die("fork");
		if (child == 0)
			_exit(5);
		/* Not waited for until the checks: a zombie until then. */
		for (int i = 0; i < 500; i++) {
			char path[64], stat[256] = "";
			snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
			FILE *f = fopen(path, "r");
			if (f) {
				if (!fgets(stat, sizeof stat, f))
					stat[0] = 0;
				fclose(f);
			}
			char *close = strrchr(stat, ')');
			if (close && close[1] == ' ' && close[2] == 'Z')
				break;
			nap_ms(2);
		}
	} else if (!strcmp(mode, "socketpair")) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
			die("socketpair");
	} else if (!strcmp(mode, "unixconnect") || !strcmp(mode, "unixlisten")) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		int listens = !strcmp(mode, "unixlisten");
		path_in_dir(a.sun_path, sizeof a.sun_path, listens ? "listen.sock" : "outside.sock");
		fds[0] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fds[0] < 0)
			die("socket");
		if (listens) {
			if (bind(fds[0], (struct sockaddr *)&a, sizeof a) != 0 || listen(fds[0], 4) != 0)
				die("listen on DIR/listen.sock");
		} else if (connect(fds[0], (struct sockaddr *)&a, sizeof a) != 0) {
			die("connect to DIR/outside.sock");
		}
	} else if (!strcmp(mode, "scm_rights")) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, fds) != 0 || pipe(fds + 2) != 0)
			die("socketpair");
		char cbuf[CMSG_SPACE(sizeof(int))];
		memset(cbuf, 0, sizeof cbuf);
		struct iovec iov = { .iov_base = "fd", .iov_len = 2 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof cbuf };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fds[2], sizeof(int));
		if (send(fds[0], "first", 5, 0) != 5 || sendmsg(fds[0], &m, 0) != 2)
			die("sendmsg");
		close(fds[2]);
		fds[2] = -1;
		write_all(fds[3], "through", 7);
	} else if (!strcmp(mode, "tcp")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t alen = sizeof a;
		fds[0] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[0] < 0 || bind(fds[0], (struct sockaddr *)&a, sizeof a) != 0 ||
		    listen(fds[0], 1) != 0 || getsockname(fds[0], (struct sockaddr *)&a, &alen) != 0)
			die("listen on 127.0.0.1");
		fds[1] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[1] < 0 || connect(fds[1], (struct sockaddr *)&a, sizeof a) != 0)
			die("connect");
		fds[2] = accept(fds[0], NULL, NULL);
		if (fds[2] < 0)
			die("accept");
	} else if (!strcmp(mode, "shared_anon")) {
		mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED)
			die("mmap");
		strcpy(mem, "shared anonymous");
	} else if (!strcmp(mode, "shared_file")) {
		path_in_dir(path, sizeof path, "shared.bin");
		fds[0] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fds[0] < 0 || ftruncate(fds[0], 4096) != 0)
			die("shared file");
		mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
		if (mem == MAP_FAILED)
			die("mmap");
		close(fds[0]); /* only the mapping remains */
		fds[0] = -1;
		strcpy(mem, "shared file");
	} else if (!strcmp(mode, "sysv_shm")) {
		int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
		if (id < 0)
			die("shmget");
		mem = shmat(id, NULL, 0);
		if (mem == (void *)-1)
			die("shmat");
		shmctl(id, IPC_RMID, NULL); /* freed when detached, even if the test dies */
		strcpy(mem, "sysv shm");
	} else if (!strcmp(mode, "epoll")) {
		if (pipe(fds + 1) != 0)
			die("pipe");
		fds[0] = epoll_create1(0);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fds[1] };
		if (fds[0] < 0 || epoll_ctl(fds[0], EPOLL_CTL_ADD, fds[1], &ev) != 0)
			die("epoll");
	} else if (!strcmp(mode, "eventfd")) {
		fds[0] = eventfd(0, 0);
		uint64_t v = 5;
		if (fds[0] < 0 || write(fds[0], &v, 8) != 8)
			die("eventfd");
	} else if (!strcmp(mode, "signalfd")) {
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR2);
		sigprocmask(SIG_BLOCK, &s, NULL);
		fds[0] = signalfd(-1, &s, 0);
		if (fds[0] < 0)
			die("signalfd");
	} else if (!strcmp(mode, "timerfd")) {
		fds[0] = timerfd_create(CLOCK_MONOTONIC, 0);
		struct itimerspec its = { .it_value = { 1000, 0 } };
		if (fds[0] < 0 || timerfd_settime(fds[0], 0, &its, NULL) != 0)
			die("timerfd");
	} else if (!strcmp(mode, "inotify")) {
		fds[0] = inotify_init1(0);
		if (fds[0] < 0 || inotify_add_watch(fds[0], dir ? dir : "/", IN_CREATE) < 0)
			die("inotify");
	} else if (!strcmp(mode, "inotify_queued")) {
		char path[4096];
		fds[0] = inotify_init1(0);
		if (fds[0] < 0 || inotify_add_watch(fds[0], dir ? dir : "/", IN_CREATE) < 0)
			die("inotify");
		path_in_dir(path, sizeof path, "queued");
		close(open(path, O_WRONLY | O_CREAT, 0600));
	} else if (!strcmp(mode, "io_uring")) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		fds[0] = (int)syscall(SYS_io_uring_setup, 4, &p);
		if (fds[0] < 0)
			die("io_uring_setup");
	} else if (!strcmp(mode, "itimer")) {
		signal(SIGALRM, on_alarm);
		struct itimerval it = { .it_interval = { 1000, 0 }, .it_value = { 1000, 0 } };
		if (setitimer(ITIMER_REAL, &it, NULL) != 0)
			die("setitimer");
	} else if (!strcmp(mode, "posix_timer")) {
		signal(SIGUSR1, on_usr1);
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_SIGNAL;
		sev.sigev_signo = SIGUSR1;
		struct itimerspec its = { .it_value = { 1000, 0 } };
		if (timer_create(CLOCK_MONOTONIC, &sev, &posix_timer) != 0 ||
		    timer_settime(posix_timer, 0, &its, NULL) != 0)
			die("timer_create");
	} else if (!strcmp(mode, "orphan_timer")) {
		pthread_t t;
		void *failed = (void *)1;
		if (pthread_create(&t, NULL, orphan_timer_main, NULL) != 0 ||
		    pthread_join(t, &failed) != 0 || failed)
			die("timer_create in a thread");
	} else if (!strcmp(mode, "thread_cpu_timer")) {
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_NONE;
		struct itimerspec its = { .it_value = { 1000, 0 } };
		if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &posix_timer) != 0 ||
		    timer_settime(posix_timer, 0, &its, NULL) != 0)
			die("timer_create");
	} else {
		say("SETUP-FAILED unknown mode %s\n", mode);
		exit(2);
	}
}

static int round_trip(int a, int b)
{
	char buf[8] = { 0 };
	return write(a, "ping", 4) == 4 && read(b, buf, 4) == 4 && !memcmp(buf, "ping", 4);
}

static void verify(void)
{
	if (!strcmp(mode, "plain")) {
		check(1, "plain", "-");
	} else if (!strcmp(mode, "threads")) {
		long before[THREADS];
		for (int i = 0; i < THREADS; i++)
			before[i] = thread_counts[i];
		nap_ms(100);
		threads_stop = 1;
		for (int i = 0; i < THREADS; i++) {
			pthread_join(threads[i], NULL);
			check(thread_counts[i] > before[i], "thread still running", "thread %d at %ld",
			      i, thread_counts[i]);
		}
	} else if (!strcmp(mode, "shstk")) {
		unsigned long before = shstk_spins;
		nap_ms(200);
		check(shstk_status != 1 || shstk_spins > before, "shadow-stack thread still running",
		      "%lu spins", shstk_spins);
	} else if (!strcmp(mode, "child") || !strcmp(mode, "zombie")) {
		int st = 0;
		pid_t w = waitpid(child, &st, 0);
		int want = !strcmp(mode, "zombie") ? 5 : 0;
		check(w == child && WIFEXITED(st) && WEXITSTATUS(st) == want, "child exited as it did",
		      "waitpid %d status %#x", (int)w, st);
	} else if (!strcmp(mode, "socketpair")) {
		check(round_trip(fds[0], fds[1]), "socketpair carries data", "errno %d", errno);
		check(round_trip(fds[1], fds[0]), "socketpair carries data back", "errno %d", errno);
	} else if (!strcmp(mode, "unixconnect")) {
		check(write(fds[0], "ping", 4) == 4, "unix socket to the outside still connected",
		      "errno %d", errno);
	} else if (!strcmp(mode, "unixlisten")) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		path_in_dir(a.sun_path, sizeof a.sun_path, "listen.sock");
		fds[1] = socket(AF_UNIX, SOCK_STREAM, 0);
		int ok = fds[1] >= 0 && connect(fds[1], (struct sockaddr *)&a, sizeof a) == 0;
		/* A connection the test left waiting (after a refusal) comes first: skip it. */
		fds[2] = -1;
		for (int i = 0; ok && i < 3 && fds[2] < 0; i++) {
			int fd = accept(fds[0], NULL, NULL);
			struct ucred cred;
			socklen_t len = sizeof cred;
			if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
			    cred.pid == getpid())
				fds[2] = fd;
		}
		check(fds[2] >= 0 && round_trip(fds[1], fds[2]), "unix listener still accepts",
		      "errno %d", errno);
	} else if (!strcmp(mode, "scm_rights")) {
		char buf[8] = { 0 }, cbuf[CMSG_SPACE(sizeof(int))];
		ssize_t n = recv(fds[1], buf, sizeof buf, MSG_DONTWAIT);
		check(n == 5 && !memcmp(buf, "first", 5), "first message still queued", "%zd", n);
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof cbuf };
		n = recvmsg(fds[1], &m, MSG_DONTWAIT);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		int passed = -1;
		if (n == 2 && c && c->cmsg_type == SCM_RIGHTS)
			memcpy(&passed, CMSG_DATA(c), sizeof(int));
		char got[8] = { 0 };
		check(passed >= 0 && read(passed, got, 7) == 7 && !strcmp(got, "through"),
		      "the passed pipe end still arrives and reads", "n %zd fd %d", n, passed);
	} else if (!strcmp(mode, "tcp")) {
		check(round_trip(fds[1], fds[2]), "tcp connection carries data", "errno %d", errno);
	} else if (!strcmp(mode, "shared_anon")) {
		check(!strcmp(mem, "shared anonymous"), "shared anonymous memory intact", "'%s'", mem);
	} else if (!strcmp(mode, "shared_file")) {
		char path[4096], buf[32] = { 0 };
		path_in_dir(path, sizeof path, "shared.bin");
		strcpy(mem, "written later");
		int fd = open(path, O_RDONLY);
		check(fd >= 0 && pread(fd, buf, 13, 0) == 13 && !strcmp(buf, "written later"),
		      "shared file mapping writes through", "file has '%s'", buf);
	} else if (!strcmp(mode, "sysv_shm")) {
		check(!strcmp(mem, "sysv shm"), "SysV shared memory intact", "'%s'", mem);
		shmdt(mem);
	} else if (!strcmp(mode, "epoll")) {
		struct epoll_event ev;
		write_all(fds[2], "x", 1);
		int n = epoll_wait(fds[0], &ev, 1, 1000);
		check(n == 1 && ev.data.fd == fds[1], "epoll reports the pipe", "n %d", n);
	} else if (!strcmp(mode, "eventfd")) {
		uint64_t v = 0;
		check(read(fds[0], &v, 8) == 8 && v == 5, "eventfd counter", "value %llu",
		      (unsigned long long)v);
	} else if (!strcmp(mode, "signalfd")) {
		struct signalfd_siginfo si;
		memset(&si, 0, sizeof si);
		raise(SIGUSR2);
		check(read(fds[0], &si, sizeof si) == sizeof si && si.ssi_signo == SIGUSR2,
		      "signalfd delivers SIGUSR2", "signo %u", si.ssi_signo);
	} else if (!strcmp(mode, "timerfd")) {
		struct itimerspec its;
		timerfd_gettime(fds[0], &its);
		check(its.it_value.tv_sec > 800, "timerfd still armed", "%lld s left",
		      (long long)its.it_value.tv_sec);
	} else if (!strcmp(mode, "inotify")) {
		char path[4096];
		path_in_dir(path, sizeof path, "inotify-probe");
		close(open(path, O_WRONLY | O_CREAT, 0600));
		char buf[4096] __attribute__((aligned(8)));
		ssize_t n = read(fds[0], buf, sizeof buf);
		struct inotify_event *e = (struct inotify_event *)buf;
		check(n > 0 && (e->mask & IN_CREATE) && !strcmp(e->name, "inotify-probe"),
		      "inotify reports the new file", "read %zd", n);
	} else if (!strcmp(mode, "inotify_queued")) {
		char buf[4096] __attribute__((aligned(8)));
		ssize_t n = read(fds[0], buf, sizeof buf);
		struct inotify_event *e = (struct inotify_event *)buf;
		check(n > 0 && (e->mask & IN_CREATE) && !strcmp(e->name, "queued"),
		      "the queued inotify event is still there", "read %zd", n);
	} else if (!strcmp(mode, "io_uring")) {
		check(fcntl(fds[0], F_GETFD) >= 0, "io_uring fd still open", "errno %d", errno);
	} else if (!strcmp(mode, "itimer")) {
		struct itimerval it;
		getitimer(ITIMER_REAL, &it);
		check(it.it_value.tv_sec > 800 && it.it_interval.tv_sec == 1000,
		      "interval timer still armed", "%lld s left, interval %lld",
		      (long long)it.it_value.tv_sec, (long long)it.it_interval.tv_sec);
		check(alarms == 0, "no SIGALRM", "%d", (int)alarms);
	} else if (!strcmp(mode, "posix_timer") || !strcmp(mode, "thread_cpu_timer") ||
		   !strcmp(mode, "orphan_timer")) {
		struct itimerspec its;
		timer_gettime(posix_timer, &its);
		check(its.it_value.tv_sec > 800, "POSIX timer still armed", "%lld s left",
		      (long long)its.it_value.tv_sec);
		check(usr1s == 0, "no timer signal", "%d", (int)usr1s);
		timer_delete(posix_timer);
	}
}

int main(int argc, char **argv)
{
	usage_if(argc < 3 || argc > 4, "refuse MODE STOP_FILE [DIR]");
	mode = argv[1];
	stop_file = argv[2];
	dir = argc == 4 ? argv[3] : NULL;
	setup();
	ready();
	long tick = 0;
	while (!file_exists(stop_file)) {
		if (++tick > 2400) {
			say("FAIL stop file never appeared\n");
			return 3;
		}
		say("tick %ld\n", tick);
		nap_ms(50);
	}
	say("STOPPING after %ld ticks\n", tick);
	verify();
	finish();
}
