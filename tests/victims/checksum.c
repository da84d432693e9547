/*
 * A deterministic CPU and memory workload that prints progress: one line per round through
 * stdio (printf + fflush), then a checksum of all its memory. Output depends only on the
 * arguments, so a checkpointed and restored run must print exactly what an uninterrupted run
 * prints. Built dynamically (`checksum`) and statically (`checksum_static`).
 *
 * usage: checksum ROUNDS [PACE_MS]   (PACE_MS: sleep that long after each round)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BSS_WORDS (1u << 18)  /* 2 MiB in .bss */
#define HEAP_WORDS (1u << 20) /* 8 MiB from malloc (an mmap) */
#define OPS_PER_ROUND 1500000

static uint64_t bss[BSS_WORDS];

static uint64_t next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: checksum ROUNDS [PACE_MS]\n");
		return 2;
	}
	int rounds = atoi(argv[1]);
	long pace = argc == 3 ? atol(argv[2]) : 0;
	uint64_t *heap = malloc(HEAP_WORDS * sizeof *heap);
	if (!heap)
		return 2;
	uint64_t s = 0x853c49e6748fea9bULL;
	for (uint32_t i = 0; i < HEAP_WORDS; i++)
		heap[i] = next(&s);

	for (int r = 1; r <= rounds; r++) {
		for (int i = 0; i < OPS_PER_ROUND; i++) {
			uint64_t v = next(&s);
			uint32_t h = (uint32_t)(v >> 20) & (HEAP_WORDS - 1);
			uint32_t b = (uint32_t)v & (BSS_WORDS - 1);
			heap[h] += v ^ bss[b];
			bss[b] = (bss[b] << 1 | bss[b] >> 63) ^ heap[h];
		}
		printf("round %d %016llx\n", r, (unsigned long long)s);
		fflush(stdout);
		if (pace > 0) {
			struct timespec ts = { pace / 1000, (pace % 1000) * 1000000L };
			while (nanosleep(&ts, &ts) != 0)
				;
		}
	}
	uint64_t sum = 0;
	for (uint32_t i = 0; i < HEAP_WORDS; i++)
		sum = sum * 31 + heap[i];
	for (uint32_t i = 0; i < BSS_WORDS; i++)
		sum = sum * 37 + bss[i];
	printf("final %016llx\n", (unsigned long long)sum);
	return 0;
}
