/* A native program that leaks on purpose, for the capture tests: every line on stdin
 * opens the file named by argv[1] from keep_one() (and never closes it), and opens and
 * closes it from peek_one(); it answers each line with the count kept. Built by the test
 * with frame pointers and symbols. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static int kept;

__attribute__((noinline)) int keep_one(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd >= 0)
		kept++;
	return fd;
}

__attribute__((noinline)) void peek_one(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	char line[64];
	if (argc < 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		peek_one(argv[1]);
		keep_one(argv[1]);
		printf("%d\n", kept);
	}
	return 0;
}
