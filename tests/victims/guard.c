/*
 * Memory layout and protections survive a restore.
 *
 * One mapping of 33 pages: 16 RW pages, a PROT_NONE guard page, 16 more RW pages; some RW pages
 * are never touched; one page is made read-only after being filled. After the restore: data
 * intact, untouched pages read as zero, the guard and read-only pages still fault (proved with
 * a SIGSEGV handler and sigsetjmp), /proc/self/maps shows the guard as ---p.
 *
 * usage: guard GO_FILE
 */
#include "victim.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#define PAGES 33
#define GUARD 16
#define RO 20

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

static int touched(int p) { return p != GUARD && p % 5 != 3; }
static unsigned char val(int p, long j) { return (unsigned char)(p * 29 + j * 3 + 1); }

/* Returns 1 if writing (write != 0) or reading `addr` faults at `addr`. */
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

static int maps_has(uintptr_t start, uintptr_t end, const char *perms)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int found = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char p[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, p) == 3 && s == start && e == end &&
		    strcmp(p, perms) == 0)
			found = 1;
	}
	if (f)
		fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "guard GO_FILE");
	page = sysconf(_SC_PAGESIZE);

	unsigned char *m = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	mprotect(m + GUARD * page, page, PROT_NONE);
	for (int p = 0; p < PAGES; p++)
		if (touched(p))
			for (long j = 0; j < page; j++)
				m[p * page + j] = val(p, j);
	mprotect(m + RO * page, page, PROT_READ);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);

	ready();
	wait_go(argv[1], 0);

	int bad_page = -1;
	for (int p = 0; p < PAGES && bad_page < 0; p++) {
		if (p == GUARD)
			continue;
		for (long j = 0; j < page; j++) {
			unsigned char want = touched(p) ? val(p, j) : 0;
			if (m[p * page + j] != want) {
				bad_page = p;
				break;
			}
		}
	}
	check(bad_page < 0, "page contents (touched and untouched)", "page %d differs", bad_page);

	uintptr_t g = (uintptr_t)(m + GUARD * page);
	check(maps_has(g, g + page, "---p"), "guard page ---p in /proc/self/maps", "not found");
	check(maps_has((uintptr_t)m, g, "rw-p"), "low RW area in /proc/self/maps", "not found");
	check(faults(m + GUARD * page, 1), "writing the guard page faults", "no fault");
	check(faults(m + GUARD * page + page - 1, 0), "reading the guard page faults", "no fault");
	check(faults(m + RO * page + 10, 1), "writing the read-only page faults", "no fault");
	check(!faults(m + RO * page + 10, 0), "reading the read-only page works", "it faulted");
	check(!faults(m + (GUARD - 1) * page + page - 1, 1), "page below the guard writable",
	      "it faulted");
	check(!faults(m + (GUARD + 1) * page, 1), "page above the guard writable", "it faulted");
	check(!faults(m + 3 * page, 1), "untouched page writable", "it faulted");
	finish();
}
