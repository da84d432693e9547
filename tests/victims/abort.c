/*
 * A restored process that calls abort(): it dies of SIGABRT, and so must `mrunctl restore`.
 * Core dumps are disabled first (RLIMIT_CORE 0) so nothing is written to disk.
 *
 * usage: abort GO_FILE
 */
#include "victim.h"
#include <sys/resource.h>

int main(int argc, char **argv)
{
	usage_if(argc != 2, "abort GO_FILE");
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	ready();
	wait_go(argv[1], 0);
	say("ABORTING\n");
	abort();
}
