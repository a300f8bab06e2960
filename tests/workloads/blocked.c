/*
 * The workload of tests/record_blocked.rs: two threads that block in D
 * (uninterruptible sleep) in known kernel functions, and what the kernel's
 * own get_wchan (/proc/TID/wchan) says they block in.
 *   sl-vforker vfork()s VFORKS children, each sleeping SLEEP_MS before it
 *              exits: meanwhile the parent waits in D for the vfork to be
 *              done, not for I/O. Each child reads its parent's wchan
 *              first (the parent is asleep by then) and keeps the answer.
 *   sl-direct  reads a file with O_DIRECT, READS times: each read waits in
 *              D for the disk, for I/O. A third thread samples its wchan
 *              while it is in D and keeps the most frequent answer.
 * argv[1]: the report file ("pid PID", "tid ROLE TID", "wchan ROLE NAME",
 * "done"); argv[2]: a directory on a disk (O_DIRECT: not tmpfs).
 * Built by the test with: cc -O1 -pthread.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define VFORKS 30
#define SLEEP_MS 5
#define READS 300
#define BLOCK (256 << 10)
#define FILE_BLOCKS 16

static FILE *report;
static char data_path[4096];
static volatile pid_t direct_tid;
static volatile int direct_done;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void announce(const char *role)
{
	prctl(PR_SET_NAME, role);
	fprintf(report, "tid %s %ld\n", role, (long)syscall(SYS_gettid));
	fflush(report);
}

/* Reads /proc/TID/FILE with raw syscalls and no libc state (a
 * vfork child must not change what its parent shares; snprintf into a
 * local buffer does not). */
static void read_proc(long tid, const char *file, char *out, size_t len)
{
	char path[64];
	long fd, n;

	snprintf(path, sizeof(path), "/proc/%ld/%s", tid, file);
	out[0] = 0;
	fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
	if (fd < 0)
		return;
	n = syscall(SYS_read, fd, out, len - 1);
	out[n > 0 ? n : 0] = 0;
	syscall(SYS_close, fd);
}

static void *vforker(void *arg)
{
	/* Written by the children (vfork shares the memory). */
	static char wchan[VFORKS][64];
	struct timespec ts = {0, SLEEP_MS * 1000000L};
	long parent;
	int agree = 0;

	(void)arg;
	announce("sl-vforker");
	parent = syscall(SYS_gettid);
	for (int i = 0; i < VFORKS; i++) {
		pid_t child = vfork();

		if (child < 0)
			die("vfork");
		if (child == 0) {
			syscall(SYS_nanosleep, &ts, NULL);
			read_proc(parent, "wchan", wchan[i], sizeof(wchan[i]));
			syscall(SYS_exit, 0);
		}
		if (waitpid(child, NULL, 0) != child)
			die("waitpid");
	}
	for (int i = 0; i < VFORKS; i++)
		agree += strcmp(wchan[i], wchan[0]) == 0;
	/* Every child saw the same function, or the report says none. */
	fprintf(report, "wchan sl-vforker %s\n", agree == VFORKS && wchan[0][0] ? wchan[0] : "?");
	fflush(report);
	return NULL;
}

static void *direct(void *arg)
{
	void *buf;
	int fd;

	(void)arg;
	announce("sl-direct");
	fd = open(data_path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die("open O_DIRECT");
	if (posix_memalign(&buf, 4096, BLOCK))
		die("posix_memalign");
	direct_tid = syscall(SYS_gettid);
	for (int i = 0; i < READS; i++)
		if (pread(fd, buf, BLOCK, (off_t)(i % FILE_BLOCKS) * BLOCK) != BLOCK)
			die("pread");
	direct_done = 1;
	close(fd);
	return NULL;
}

/* The most frequent wchan of sl-direct while it is in D. */
static void *sampler(void *arg)
{
	enum { KINDS = 16 };
	static char names[KINDS][64];
	int counts[KINDS] = {0}, best = -1;
	char stat[512], name[64];

	(void)arg;
	while (!direct_tid)
		usleep(100);
	while (!direct_done) {
		char *state;

		read_proc(direct_tid, "wchan", name, sizeof(name));
		read_proc(direct_tid, "stat", stat, sizeof(stat));
		/* "tid (comm) S ...": the state follows the comm's ')'. */
		state = strrchr(stat, ')');
		if (!state || state[1] != ' ' || state[2] != 'D' || !name[0] || !strcmp(name, "0"))
			continue;
		for (int k = 0; k < KINDS; k++) {
			if (!names[k][0])
				strcpy(names[k], name);
			if (!strcmp(names[k], name)) {
				counts[k]++;
				break;
			}
		}
	}
	for (int k = 0; k < KINDS; k++)
		if (counts[k] && (best < 0 || counts[k] > counts[best]))
			best = k;
	fprintf(report, "wchan sl-direct %s\n", best >= 0 ? names[best] : "?");
	fflush(report);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t threads[3];
	void *buf;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: %s REPORT DIR\n", argv[0]);
		return 2;
	}
	report = fopen(argv[1], "w");
	if (!report)
		die(argv[1]);
	fprintf(report, "pid %d\n", getpid());
	/* The file the direct reads read, on the disk. */
	snprintf(data_path, sizeof(data_path), "%s/direct.data", argv[2]);
	fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || posix_memalign(&buf, 4096, BLOCK))
		die(data_path);
	memset(buf, 'x', BLOCK);
	for (int i = 0; i < FILE_BLOCKS; i++)
		if (write(fd, buf, BLOCK) != BLOCK)
			die("write");
	if (fsync(fd) || close(fd))
		die("fsync");
	pthread_create(&threads[0], NULL, vforker, NULL);
	pthread_create(&threads[1], NULL, direct, NULL);
	pthread_create(&threads[2], NULL, sampler, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(threads[i], NULL);
	fprintf(report, "done\n");
	fclose(report);
	return 0;
}
