/*
 * A directory read part way (issue 10, "find prints some entries twice"): DIR holds 3000
 * files with long names, so a listing takes several getdents batches; 700 entries are read
 * before the checkpoint. After the restore the listing goes on where it stopped: every name
 * exactly once, none twice.
 *
 * usage: dirwalk GO_FILE DIR
 */
#include "victim.h"
#include <dirent.h>

#define FILES 3000

static unsigned char seen[FILES];

/* Counts one name; returns 1 if it was seen before. */
static int count(const char *name, int *others)
{
	int n;
	if (sscanf(name, "entry-%d-", &n) == 1 && n >= 0 && n < FILES)
		return seen[n]++ != 0;
	(*others)++;
	return 0;
}

int main(int argc, char **argv)
{
	usage_if(argc != 3, "dirwalk GO_FILE DIR");
	const char *go = argv[1], *dir = argv[2];
	char path[4096];
	for (int i = 0; i < FILES; i++) {
		snprintf(path, sizeof path,
			 "%s/entry-%05d-with-a-long-name-so-that-a-listing-needs-many-batches", dir,
			 i);
		int fd = open(path, O_CREAT | O_WRONLY, 0600);
		if (fd < 0) {
			perror(path);
			return 2;
		}
		close(fd);
	}
	DIR *d = opendir(dir);
	if (!d) {
		perror(dir);
		return 2;
	}
	int twice = 0, others = 0, before = 0;
	struct dirent *e;
	while (before < 700 && (e = readdir(d)) != NULL) {
		twice += count(e->d_name, &others);
		before++;
	}
	ready();
	wait_go(go, 0);
	while ((e = readdir(d)) != NULL)
		twice += count(e->d_name, &others);
	int missing = 0;
	for (int i = 0; i < FILES; i++)
		missing += seen[i] == 0;
	check(twice == 0, "no entry is listed twice", "%d twice", twice);
	check(missing == 0, "every entry is listed", "%d missing", missing);
	check(others == 2, "'.' and '..' are listed once each", "%d other names", others);
	closedir(d);
	finish();
}
