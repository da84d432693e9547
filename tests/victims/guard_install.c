/*
 * Guard regions installed with madvise(MADV_GUARD_INSTALL) (Linux 6.13+) survive a restore,
 * and so does the memory around them.
 *
 * One private anonymous mapping of 16 pages, every page filled; guard regions on pages 4-5
 * and on page 12; a private file-less mapping of 4 pages with a guard on page 0 only. After
 * the restore: the data around the guards is intact, every guard page still faults on read
 * and write (SIGSEGV caught with sigsetjmp), pages next to them do not, and MADV_GUARD_REMOVE
 * takes a guard away again (the page then reads as zero).
 *
 * Prints "UNSUPPORTED" and exits 0 before READY on a kernel without MADV_GUARD_INSTALL.
 *
 * usage: guard_install GO_FILE
 */
#include "victim.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE 103
#endif

#define PAGES 16

static long page;
static sigjmp_buf jump;
static volatile uintptr_t fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	fault_addr = (uintptr_t)si->si_addr;
	siglongjmp(jump, 1);
}

static int faults(volatile unsigned char *addr, int write)
{
	fault_addr = 0;
	if (sigsetjmp(jump, 1) == 0) {
		if (write)
			*addr = 0x42;
		else
			(void)*addr;
		return 0;
	}
	return fault_addr == (uintptr_t)addr;
}

static int guarded(int p) { return p == 4 || p == 5 || p == 12; }
static unsigned char val(int p, long j) { return (unsigned char)(p * 31 + j * 5 + 7); }

int main(int argc, char **argv)
{
	usage_if(argc != 2, "guard_install GO_FILE");
	page = sysconf(_SC_PAGESIZE);
	unsigned char *m = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *small = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || small == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	for (int p = 0; p < PAGES; p++)
		for (long j = 0; j < page; j++)
			m[p * page + j] = val(p, j);
	memset(small, 0x5a, 4 * page);
	if (madvise(m + 4 * page, 2 * page, MADV_GUARD_INSTALL)) {
		if (errno == EINVAL) {
			say("UNSUPPORTED\n");
			return 0;
		}
		perror("madvise");
		return 2;
	}
	if (madvise(m + 12 * page, page, MADV_GUARD_INSTALL) ||
	    madvise(small, page, MADV_GUARD_INSTALL)) {
		perror("madvise");
		return 2;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);

	ready();
	wait_go(argv[1], 0);

	int bad_page = -1;
	for (int p = 0; p < PAGES && bad_page < 0; p++) {
		if (guarded(p))
			continue;
		for (long j = 0; j < page; j++)
			if (m[p * page + j] != val(p, j)) {
				bad_page = p;
				break;
			}
	}
	check(bad_page < 0, "pages around the guards", "page %d differs", bad_page);
	for (int p = 0; p < PAGES; p++) {
		if (!guarded(p))
			continue;
		char what[64];
		snprintf(what, sizeof what, "guard page %d faults on read and write", p);
		check(faults(m + p * page, 0) && faults(m + p * page + page - 1, 1), what,
		      "no fault");
	}
	check(!faults(m + 3 * page + page - 1, 1) && !faults(m + 6 * page, 1),
	      "pages next to the guards writable", "one faulted");
	check(faults(small, 0), "guard page of the small mapping faults", "no fault");
	int ok = 1;
	for (long j = page; j < 4 * page; j++)
		ok &= small[j] == 0x5a;
	check(ok, "rest of the small mapping", "differs");
	check(madvise(m + 12 * page, page, MADV_GUARD_REMOVE) == 0 && !faults(m + 12 * page, 0) &&
		      m[12 * page] == 0,
	      "MADV_GUARD_REMOVE after restore", "%s", strerror(errno));
	finish();
}
