/*
 * The program break and the malloc heap survive a restore and keep growing afterwards.
 *
 * Before: small mallocs with known contents, a region grown with sbrk() by hand.
 * After: sbrk(0) is exactly where it was, the old data is intact, sbrk() grows and shrinks the
 * break, and fresh small (brk heap) and large (mmap) allocations can be written and read.
 * Built dynamically and statically (static glibc keeps its thread block in the brk heap).
 *
 * usage: brk GO_FILE
 */
#include "victim.h"

#define SMALL 2000

static unsigned char *small[SMALL];
static size_t small_len(int i) { return 16 + (size_t)(i * 37) % 500; }
static unsigned char pat(int i, size_t j) { return (unsigned char)(i * 131 + j * 7 + 3); }

static int check_region(const unsigned char *p, size_t len, unsigned char seed)
{
	for (size_t j = 0; j < len; j++)
		if (p[j] != (unsigned char)(seed + j * 13))
			return 0;
	return 1;
}

static void fill_region(unsigned char *p, size_t len, unsigned char seed)
{
	for (size_t j = 0; j < len; j++)
		p[j] = (unsigned char)(seed + j * 13);
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "brk GO_FILE");

	for (int i = 0; i < SMALL; i++) {
		small[i] = malloc(small_len(i));
		for (size_t j = 0; j < small_len(i); j++)
			small[i][j] = pat(i, j);
	}
	/* Free every third so the heap has holes for later allocations. */
	for (int i = 0; i < SMALL; i += 3) {
		free(small[i]);
		small[i] = NULL;
	}
	const size_t hand = 256 * 1024;
	unsigned char *by_hand = sbrk((intptr_t)hand);
	if (by_hand == (void *)-1) {
		perror("sbrk");
		return 2;
	}
	fill_region(by_hand, hand, 0x5a);
	void *brk_before = sbrk(0);

	ready();
	wait_go(argv[1], 0);

	void *brk_after = sbrk(0);
	check(brk_after == brk_before, "sbrk(0) unchanged", "before %p after %p", brk_before,
	      brk_after);
	check(check_region(by_hand, hand, 0x5a), "sbrk'd region intact", "data differs");
	int bad = -1;
	for (int i = 0; i < SMALL && bad < 0; i++) {
		if (!small[i])
			continue;
		for (size_t j = 0; j < small_len(i); j++)
			if (small[i][j] != pat(i, j)) {
				bad = i;
				break;
			}
	}
	check(bad < 0, "malloc'd data intact", "block %d differs", bad);

	const size_t grow = 8 * 1024 * 1024;
	unsigned char *more = sbrk((intptr_t)grow);
	check(more == brk_before, "sbrk grows from the old break", "got %p want %p", (void *)more,
	      brk_before);
	if (more != (void *)-1) {
		fill_region(more, grow, 0x21);
		check(check_region(more, grow, 0x21), "grown break writable", "data differs");
		check(sbrk(0) == (char *)brk_before + grow, "break moved by sbrk", "at %p", sbrk(0));
		check(sbrk(-(intptr_t)(grow / 2)) != (void *)-1 &&
			      sbrk(0) == (char *)brk_before + grow / 2,
		      "sbrk shrinks", "at %p", sbrk(0));
	}

	for (int i = 0; i < SMALL; i += 3) {
		small[i] = malloc(small_len(i));
		for (size_t j = 0; j < small_len(i); j++)
			small[i][j] = pat(i, j);
	}
	unsigned char *many[20000];
	for (int i = 0; i < 20000; i++) {
		many[i] = malloc(64 + (size_t)i % 200);
		memset(many[i], i & 0xff, 64 + (size_t)i % 200);
	}
	int many_bad = -1;
	for (int i = 0; i < 20000 && many_bad < 0; i++)
		for (size_t j = 0; j < 64 + (size_t)i % 200; j++)
			if (many[i][j] != (i & 0xff)) {
				many_bad = i;
				break;
			}
	check(many_bad < 0, "new small mallocs", "block %d differs", many_bad);
	for (int i = 0; i < 20000; i++)
		free(many[i]);

	const size_t big = 64 * 1024 * 1024;
	unsigned char *huge = malloc(big);
	check(huge != NULL, "64 MiB malloc", "returned NULL");
	if (huge) {
		fill_region(huge, big, 0x77);
		check(check_region(huge, big, 0x77), "64 MiB malloc writable", "data differs");
		free(huge);
	}
	for (int i = 0; i < SMALL; i++)
		free(small[i]);
	finish();
}
