/*
 * A process frozen while blocked in read(0) finishes the read after the restore, reading from
 * the restorer's stdin.
 *
 * usage: stdin_reader data   -> expects the line "hello from the test" on stdin
 *        stdin_reader eof    -> expects end of file on stdin (restored with stdin /dev/null)
 */
#include "victim.h"

int main(int argc, char **argv)
{
	usage_if(argc != 2 || (strcmp(argv[1], "data") && strcmp(argv[1], "eof")),
		 "stdin_reader data|eof");
	static const char want[] = "hello from the test\n";
	char buf[256];
	size_t len = 0;
	ready();
	for (;;) {
		ssize_t n = read(0, buf + len, sizeof buf - 1 - len);
		if (n < 0 && errno == EINTR) {
			say("INFO read returned EINTR\n");
			continue;
		}
		if (n < 0) {
			check(0, "read(0)", "errno %d", errno);
			finish();
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (memchr(buf, '\n', len) || len == sizeof buf - 1)
			break;
	}
	buf[len] = 0;
	if (strcmp(argv[1], "data") == 0)
		check(strcmp(buf, want) == 0, "read the line from stdin", "got %zu bytes '%s'", len, buf);
	else
		check(len == 0, "stdin at end of file", "got %zu bytes '%s'", len, buf);
	finish();
}
