/*
 * Shared memory between the processes of a job (issue 9): an anonymous MAP_SHARED area and a
 * memfd, both mapped before fork by a parent and its two children. After the restore each
 * child writes into both and the parent must see every write: the processes share one object
 * again, with the bytes it held at the checkpoint. A third object (a memfd) is mapped by the
 * parent at its first half and by the first child, after fork, at its second half only: the
 * bytes only the child maps must come back too.
 *
 * usage: sharedmem GO_FILE
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define SIZE (1 << 20)

int main(int argc, char **argv)
{
	usage_if(argc != 2, "sharedmem GO_FILE");
	const char *go = argv[1];
	char *anon = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int mfd = memfd_create("victim-shm", 0);
	if (anon == MAP_FAILED || mfd < 0 || ftruncate(mfd, SIZE) != 0) {
		perror("shared memory");
		return 2;
	}
	char *named = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (named == MAP_FAILED) {
		perror("mmap memfd");
		return 2;
	}
	close(mfd); /* the mapping keeps it (a held memfd descriptor is issue 10's) */
	int halves = memfd_create("victim-halves", 0);
	if (halves < 0 || ftruncate(halves, 2 * SIZE) != 0) {
		perror("memfd of two halves");
		return 2;
	}
	char *first_half = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, halves, 0);
	if (first_half == MAP_FAILED) {
		perror("mmap first half");
		return 2;
	}
	memset(first_half, 'P', SIZE);
	int filled[2];
	if (pipe(filled) != 0) {
		perror("pipe");
		return 2;
	}
	for (int i = 0; i < SIZE; i++) {
		anon[i] = (char)(i * 7);
		named[i] = (char)(i * 13);
	}
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		if (kids[k] < 0) {
			perror("fork");
			return 2;
		}
		if (kids[k] == 0) {
			char *second_half = NULL;
			if (k == 0) {
				second_half = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
						   halves, SIZE);
				if (second_half == MAP_FAILED)
					_exit(2);
				for (int i = 0; i < SIZE; i++)
					second_half[i] = (char)(i * 3 + 1);
			}
			close(halves);
			close(filled[0]);
			if (write(filled[1], "x", 1) != 1)
				_exit(2);
			close(filled[1]);
			wait_go(go, 0);
			if (k == 0) {
				for (int i = 0; i < SIZE; i++)
					if (second_half[i] != (char)(i * 3 + 1))
						_exit(3); /* its own bytes were lost */
			}
			snprintf(anon + 4096 * (k + 1), 64, "anon from child %d", k);
			snprintf(named + 4096 * (k + 1), 64, "memfd from child %d", k);
			_exit(0);
		}
	}
	close(halves);
	close(filled[1]);
	char got[2];
	for (int k = 0; k < 2; k++)
		if (read(filled[0], got + k, 1) != 1) {
			perror("waiting for the children");
			return 2;
		}
	close(filled[0]);
	ready();
	wait_go(go, 0);
	for (int k = 0; k < 2; k++) {
		int st = 0;
		check(waitpid(kids[k], &st, 0) == kids[k] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "child exited 0 (the first: the half only it maps kept its bytes)",
		      "status %#x", st);
	}
	int bad = 0;
	for (int i = 0; i < SIZE; i++) {
		if (i >= 4096 && i < 3 * 4096)
			continue;
		if (anon[i] != (char)(i * 7) || named[i] != (char)(i * 13))
			bad++;
	}
	check(bad == 0, "the shared bytes of the checkpoint are intact", "%d differ", bad);
	bad = 0;
	for (int i = 0; i < SIZE; i++)
		bad += first_half[i] != 'P';
	check(bad == 0, "the half the parent maps is intact", "%d differ", bad);
	for (int k = 0; k < 2; k++) {
		char want[64];
		snprintf(want, sizeof want, "anon from child %d", k);
		check(!strcmp(anon + 4096 * (k + 1), want), "the parent sees a child's anonymous write",
		      "'%s'", anon + 4096 * (k + 1));
		snprintf(want, sizeof want, "memfd from child %d", k);
		check(!strcmp(named + 4096 * (k + 1), want), "the parent sees a child's memfd write",
		      "'%s'", named + 4096 * (k + 1));
	}
	finish();
}
