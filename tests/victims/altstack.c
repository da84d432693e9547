/*
 * sigaltstack survives a checkpoint/restore, and SA_ONSTACK handlers (SIGUSR1 raised, SIGSEGV
 * from a real fault) run on it afterwards.
 *
 * usage: altstack GO_FILE
 */
#include "victim.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#define ALT_SIZE (64 * 1024)

static char *alt_base;
static volatile uintptr_t usr1_local, segv_local;
static volatile uintptr_t segv_addr;
static sigjmp_buf segv_jump;

static int on_alt(uintptr_t p)
{
	return p >= (uintptr_t)alt_base && p < (uintptr_t)alt_base + ALT_SIZE;
}

static void on_usr1(int sig)
{
	volatile int local = sig;
	usr1_local = (uintptr_t)&local;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	volatile int local = sig;
	segv_local = (uintptr_t)&local;
	segv_addr = (uintptr_t)si->si_addr;
	siglongjmp(segv_jump, 1);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "altstack GO_FILE");

	alt_base = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt_base == MAP_FAILED || bad == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	stack_t ss = { .ss_sp = alt_base, .ss_size = ALT_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0) {
		perror("sigaltstack");
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, NULL);
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_ONSTACK | SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);

	/* Use the alternate stack once before the checkpoint so it holds a used frame. */
	raise(SIGUSR1);
	if (!on_alt(usr1_local)) {
		say("FAIL setup: handler not on the alternate stack\n");
		return 2;
	}
	usr1_local = 0;

	ready();
	wait_go(argv[1], 0);

	stack_t old;
	memset(&old, 0xff, sizeof old);
	sigaltstack(NULL, &old);
	check(old.ss_sp == alt_base, "sigaltstack sp", "before %p now %p", (void *)alt_base, old.ss_sp);
	check(old.ss_size == ALT_SIZE, "sigaltstack size", "before %d now %zu", ALT_SIZE, old.ss_size);
	check(old.ss_flags == 0, "sigaltstack flags", "flags %#x", old.ss_flags);

	raise(SIGUSR1);
	check(usr1_local != 0, "SIGUSR1 handler ran", "it did not");
	check(on_alt(usr1_local), "SIGUSR1 handler on the alternate stack", "local at %#lx, stack %p+%d",
	      (unsigned long)usr1_local, (void *)alt_base, ALT_SIZE);

	if (sigsetjmp(segv_jump, 1) == 0) {
		*(volatile char *)bad = 1; /* faults */
		check(0, "SIGSEGV raised by the PROT_NONE page", "the write succeeded");
	} else {
		check(segv_addr == (uintptr_t)bad, "SIGSEGV si_addr", "got %#lx want %p",
		      (unsigned long)segv_addr, (void *)bad);
		check(on_alt(segv_local), "SIGSEGV handler on the alternate stack", "local at %#lx",
		      (unsigned long)segv_local);
	}

	memset(&old, 0xff, sizeof old);
	sigaltstack(NULL, &old);
	check(old.ss_flags == 0 && old.ss_sp == alt_base, "sigaltstack intact after handlers",
	      "flags %#x sp %p", old.ss_flags, old.ss_sp);
	finish();
}
