/*
 * Vector registers survive a checkpoint taken in the middle of a computation.
 *
 * Each "chunk" is one inline-asm block that loads xmm/ymm/zmm registers from memory, adds a
 * delta to every register millions of times (the values live only in registers meanwhile) and
 * stores them back; C code then compares them with init + iterations * delta. Chunks run back to
 * back until the go file appears, so the freeze almost surely lands inside a chunk and that
 * chunk's result is checked after the restore. The widest register file the CPU has is used:
 * SSE2 xmm always, AVX2 ymm and AVX-512 zmm + opmask k1..k7 when present. The FPU control state
 * (rounding mode, MXCSR FTZ/DAZ) is changed before and checked after.
 *
 * usage: avx GO_FILE
 */
#include "victim.h"
#include <fenv.h>
#include <immintrin.h>

#define CHUNK_ITERS 100000000ULL

static uint64_t init_v[32][8] __attribute__((aligned(64)));
static uint64_t delta_v[8] __attribute__((aligned(64)));
static uint64_t out_v[32][8] __attribute__((aligned(64)));
static uint16_t k_in[8], k_out[8];

#define L15(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14)
#define L31(X)                                                                                   \
	L15(X) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) \
		X(29) X(30)

#define XLOAD(i) "movdqu " #i "*64(%[in]), %%xmm" #i "\n\t"
#define XADD(i) "paddq %%xmm15, %%xmm" #i "\n\t"
#define XSTORE(i) "movdqu %%xmm" #i ", " #i "*64(%[out])\n\t"

static void xmm_chunk(uint64_t iters)
{
	__asm__ volatile(L15(XLOAD) "movdqu (%[d]), %%xmm15\n\t"
				    "1:\n\t" L15(XADD) "dec %[n]\n\t"
				    "jnz 1b\n\t" L15(XSTORE)
			 : [n] "+r"(iters)
			 : [in] "r"(init_v), [d] "r"(delta_v), [out] "r"(out_v)
			 : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
			   "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

#define YLOAD(i) "vmovdqu " #i "*64(%[in]), %%ymm" #i "\n\t"
#define YADD(i) "vpaddq %%ymm15, %%ymm" #i ", %%ymm" #i "\n\t"
#define YSTORE(i) "vmovdqu %%ymm" #i ", " #i "*64(%[out])\n\t"

__attribute__((target("avx2"))) static void ymm_chunk(uint64_t iters)
{
	__asm__ volatile(L15(YLOAD) "vmovdqu (%[d]), %%ymm15\n\t"
				    "1:\n\t" L15(YADD) "dec %[n]\n\t"
				    "jnz 1b\n\t" L15(YSTORE) "vzeroupper\n\t"
			 : [n] "+r"(iters)
			 : [in] "r"(init_v), [d] "r"(delta_v), [out] "r"(out_v)
			 : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
			   "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

#define ZLOAD(i) "vmovdqu64 " #i "*64(%[in]), %%zmm" #i "\n\t"
#define ZADD(i) "vpaddq %%zmm31, %%zmm" #i ", %%zmm" #i "\n\t"
#define ZSTORE(i) "vmovdqu64 %%zmm" #i ", " #i "*64(%[out])\n\t"
#define K7(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define KLOAD(i) "movzwl " #i "*2(%[kin]), %%eax\n\tkmovw %%eax, %%k" #i "\n\t"
#define KSTORE(i) "kmovw %%k" #i ", %%eax\n\tmovw %%ax, " #i "*2(%[kout])\n\t"

__attribute__((target("avx512f"))) static void zmm_chunk(uint64_t iters)
{
	__asm__ volatile(K7(KLOAD) L31(ZLOAD) "vmovdqu64 (%[d]), %%zmm31\n\t"
					      "1:\n\t" L31(ZADD) "dec %[n]\n\t"
					      "jnz 1b\n\t" L31(ZSTORE) K7(KSTORE) "vzeroupper\n\t"
			 : [n] "+r"(iters)
			 : [in] "r"(init_v), [d] "r"(delta_v), [out] "r"(out_v), [kin] "r"(k_in),
			   [kout] "r"(k_out)
			 : "memory", "cc", "rax", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
			   "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
			   "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24",
			   "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "k1", "k2", "k3",
			   "k4", "k5", "k6", "k7");
}

enum kind { XMM, YMM, ZMM };
static const char *kind_name[] = { "xmm", "ymm", "zmm" };
static const int kind_regs[] = { 15, 15, 31 };
static const int kind_lanes[] = { 2, 4, 8 };

static long chunks_checked, bad_lanes;
static char first_bad[256];

static void run_chunk(enum kind k)
{
	memset(out_v, 0, sizeof out_v);
	memset(k_out, 0, sizeof k_out);
	switch (k) {
	case XMM: xmm_chunk(CHUNK_ITERS); break;
	case YMM: ymm_chunk(CHUNK_ITERS); break;
	case ZMM: zmm_chunk(CHUNK_ITERS); break;
	}
	for (int r = 0; r < kind_regs[k]; r++) {
		for (int l = 0; l < kind_lanes[k]; l++) {
			uint64_t want = init_v[r][l] + CHUNK_ITERS * delta_v[l];
			if (out_v[r][l] != want) {
				if (bad_lanes++ == 0)
					snprintf(first_bad, sizeof first_bad,
						 "%s%d lane %d: got %#llx want %#llx (chunk %ld)",
						 kind_name[k], r, l, (unsigned long long)out_v[r][l],
						 (unsigned long long)want, chunks_checked);
			}
		}
	}
	if (k == ZMM) {
		for (int i = 1; i < 8; i++) {
			if (k_out[i] != k_in[i] && bad_lanes++ == 0)
				snprintf(first_bad, sizeof first_bad, "k%d: got %#x want %#x", i,
					 k_out[i], k_in[i]);
		}
	}
	chunks_checked++;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "avx GO_FILE");

	enum kind k = XMM;
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		k = YMM;
	if (__builtin_cpu_supports("avx512f"))
		k = ZMM;
	say("TESTING %s\n", kind_name[k]);

	uint64_t x = 0x0123456789abcdefULL;
	for (int r = 0; r < 32; r++)
		for (int l = 0; l < 8; l++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			init_v[r][l] = x;
		}
	for (int l = 0; l < 8; l++)
		delta_v[l] = 0x9e3779b97f4a7c15ULL * (uint64_t)(l + 1);
	for (int i = 1; i < 8; i++)
		k_in[i] = (uint16_t)(0x1111u * (unsigned)i + 0x0f0fu);

	fesetround(FE_TOWARDZERO);
	unsigned mxcsr_before = _mm_getcsr() | 0x8040; /* FTZ | DAZ */
	_mm_setcsr(mxcsr_before);

	ready();
	/* Like wait_go(GO, busy), but the busy work is the register chunks. */
	long waited = 0;
	while (!file_exists(argv[1])) {
		run_chunk(k);
		if (++waited > 5000) {
			say("FAIL go file never appeared\n");
			return 3;
		}
	}
	run_chunk(k); /* at least one full chunk after the restore, too */

	check(chunks_checked >= 1, "chunks ran", "only %ld", chunks_checked);
	check(bad_lanes == 0, kind_name[k], "%ld bad lanes, first: %s", bad_lanes, first_bad);
	check(fegetround() == FE_TOWARDZERO, "rounding mode", "got %#x", fegetround());
	check(_mm_getcsr() == mxcsr_before, "mxcsr", "got %#x want %#x", _mm_getcsr(), mxcsr_before);
	volatile double a = 1.0, b = 10.0;
	volatile double q = a / b; /* nearest: ...9a, toward zero: ...99 */
	uint64_t bits;
	double qq = q;
	memcpy(&bits, &qq, sizeof bits);
	check(bits == 0x3fb9999999999999ULL, "SSE division rounds toward zero", "bits %#llx",
	      (unsigned long long)bits);
	finish();
}
