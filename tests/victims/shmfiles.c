/*
 * Shared memory held in files (issue 9): POSIX shared memory (a named file in /dev/shm, kept
 * open and mapped), a named POSIX semaphore unlinked once open (as Python's multiprocessing
 * does) and a deleted file on disk mapped shared, all mapped before fork by a parent and its
 * two children. After the restore each child writes into the three areas and posts the
 * semaphore; the parent must see every write, the semaphore must count both posts, and the
 * shared memory file must be at its path again, the very file its descriptor holds.
 *
 * usage: shmfiles GO_FILE   (the shared memory file is /dev/shm/mrun-victim-PID)
 */
#include "victim.h"
#include <semaphore.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define SIZE (64 << 10)

static char *map_shared(int fd, const char *what)
{
	char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror(what);
		exit(2);
	}
	return p;
}

int main(int argc, char **argv)
{
	usage_if(argc != 2, "shmfiles GO_FILE");
	const char *go = argv[1];
	char name[64], sem_name[64], deleted[4096];
	snprintf(name, sizeof name, "/mrun-victim-%d", (int)getpid());
	snprintf(sem_name, sizeof sem_name, "/mrun-victim-sem-%d", (int)getpid());
	snprintf(deleted, sizeof deleted, "%s.shared", go);

	int shm = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0640);
	int dfd = open(deleted, O_CREAT | O_EXCL | O_RDWR, 0600);
	sem_t *sem = sem_open(sem_name, O_CREAT | O_EXCL, 0600, 0);
	if (shm < 0 || dfd < 0 || sem == SEM_FAILED || ftruncate(shm, SIZE) != 0 ||
	    ftruncate(dfd, SIZE) != 0) {
		perror("setting up");
		return 2;
	}
	fchmod(shm, 0640); /* whatever the umask */
	sem_unlink(sem_name);
	char *posix = map_shared(shm, "mmap of the shared memory file");
	char *disk = map_shared(dfd, "mmap of the deleted file");
	close(dfd);
	unlink(deleted);
	for (int i = 0; i < SIZE; i++) {
		posix[i] = (char)(i * 7);
		disk[i] = (char)(i * 13);
	}
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = fork();
		if (kids[k] < 0) {
			perror("fork");
			return 2;
		}
		if (kids[k] == 0) {
			wait_go(go, 0);
			snprintf(posix + 4096 * (k + 1), 64, "posix from child %d", k);
			snprintf(disk + 4096 * (k + 1), 64, "deleted file from child %d", k);
			sem_post(sem);
			_exit(0);
		}
	}
	ready();
	wait_go(go, 0);
	for (int k = 0; k < 2; k++)
		check(sem_wait(sem) == 0, "the semaphore counts a child's post", "%s", strerror(errno));
	int left = -1;
	sem_getvalue(sem, &left);
	check(left == 0, "the semaphore holds no extra post", "value %d", left);
	for (int k = 0; k < 2; k++) {
		int st = 0;
		check(waitpid(kids[k], &st, 0) == kids[k] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "child exited 0", "status %#x", st);
	}
	int bad = 0;
	for (int i = 0; i < SIZE; i++) {
		if (i >= 4096 && i < 3 * 4096)
			continue;
		if (posix[i] != (char)(i * 7) || disk[i] != (char)(i * 13))
			bad++;
	}
	check(bad == 0, "the shared bytes of the checkpoint are intact", "%d differ", bad);
	for (int k = 0; k < 2; k++) {
		char want[64];
		snprintf(want, sizeof want, "posix from child %d", k);
		check(!strcmp(posix + 4096 * (k + 1), want), "the parent sees a child's write",
		      "'%s'", posix + 4096 * (k + 1));
		snprintf(want, sizeof want, "deleted file from child %d", k);
		check(!strcmp(disk + 4096 * (k + 1), want),
		      "the parent sees a child's write to the deleted file", "'%s'",
		      disk + 4096 * (k + 1));
	}
	char path[128];
	snprintf(path, sizeof path, "/dev/shm%s", name);
	struct stat at_path, held;
	int found = stat(path, &at_path) == 0;
	check(found && fstat(shm, &held) == 0 && at_path.st_ino == held.st_ino &&
		      at_path.st_dev == held.st_dev,
	      "the shared memory file is at its path, the one its descriptor holds", "%s",
	      found ? "another file" : strerror(errno));
	check(found && (at_path.st_mode & 07777) == 0640 && at_path.st_size == SIZE,
	      "the shared memory file keeps its mode and size", "mode %o size %lld",
	      found ? at_path.st_mode & 07777 : 0, found ? (long long)at_path.st_size : -1LL);
	char through_fd[64] = "";
	pread(shm, through_fd, sizeof through_fd, 4096);
	check(!strcmp(through_fd, "posix from child 0"),
	      "a read through the descriptor sees the mapping's bytes", "'%s'", through_fd);
	shm_unlink(name);
	finish();
}
