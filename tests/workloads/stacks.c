/*
 * The workload of tests/record_stacks.rs, whose stacks are known: three
 * threads, each doing one thing in a function of its own, for DURATION_MS.
 *   sl-reader  blocks in read() on a pipe that a timer thread feeds
 *   sl-sleeper sleeps in nanosleep()
 *   sl-spinner spins in spin_in_named_function()
 * The read and nanosleep are issued with the syscall instruction in the
 * named function itself: the distribution's libc is built without frame
 * pointers, so a stack walked from inside libc's wrapper would skip its
 * caller, the frame the test looks for.
 * and a short-lived child process (this program again, exec'd with argv[2]
 * "child") that exits long before the recording ends:
 *   it sleeps in nanosleep() in child_sleeps_then_exits(), spins in
 *   child_spins_then_exits() for 200 ms of CPU time, sleeps again and exits; the parent reaps
 *   it, so at the end of the recording the process is gone.
 * Writes "pid PID", "tid ROLE TID" per thread, "child PID" once the child
 * is reaped and "done" to the file argv[1], then waits to be killed: the
 * recording ends first, so the process is still there when the recorder
 * names its frames (the child's it had to name while the child ran).
 * Built by the test with: cc -g -O0 -fno-omit-frame-pointer -pthread.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DURATION_MS 1500
/* The feeder writes a byte every this many ms: each read blocks about as long. */
#define FEED_EVERY_MS 10
#define SLEEP_MS 10
/* The child: blocks this often for SLEEP_MS, spins this long, then blocks
 * again, from another call site (a new stack), for 300 ms: the recorder sees
 * a stack about a ring poll (50 ms) after it was taken, and the child's last
 * new stacks are taken well before it exits. */
#define CHILD_SLEEPS 20
#define CHILD_SPIN_MS 200
#define CHILD_SLEEPS_AFTER 30

static int pipe_fds[2];
static FILE *report;
static volatile int stop;

static long raw_syscall3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

static void announce(const char *role)
{
	prctl(PR_SET_NAME, role);
	fprintf(report, "tid %s %ld\n", role, (long)syscall(SYS_gettid));
	fflush(report);
}

__attribute__((noinline)) void block_in_pipe_read(void)
{
	char byte;

	while (raw_syscall3(SYS_read, pipe_fds[0], (long)&byte, 1) == 1 && byte == 'x')
		;
}

__attribute__((noinline)) void sleep_in_nanosleep(void)
{
	struct timespec ts = {0, SLEEP_MS * 1000000L};

	while (!stop)
		raw_syscall3(SYS_nanosleep, (long)&ts, 0, 0);
}

__attribute__((noinline)) unsigned long spin_in_named_function(void)
{
	unsigned long n = 0;

	while (!stop)
		n = n * 6364136223846793005UL + 1442695040888963407UL;
	return n;
}

/* The process's CPU time: the spin lasts as much CPU time however busy the
 * machine is, so it gets as many CPU samples. */
static double cpu_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

__attribute__((noinline)) void child_sleeps_then_exits(int n)
{
	struct timespec ts = {0, SLEEP_MS * 1000000L};

	for (int i = 0; i < n; i++)
		raw_syscall3(SYS_nanosleep, (long)&ts, 0, 0);
}

__attribute__((noinline)) unsigned long child_spins_then_exits(void)
{
	double until = cpu_ms() + CHILD_SPIN_MS;
	unsigned long n = 0;

	while (cpu_ms() < until)
		for (int i = 0; i < 100000; i++)
			n = n * 6364136223846793005UL + 1442695040888963407UL;
	return n;
}

static int child(void)
{
	prctl(PR_SET_NAME, "sl-child");
	child_sleeps_then_exits(CHILD_SLEEPS);
	child_spins_then_exits();
	child_sleeps_then_exits(CHILD_SLEEPS_AFTER);
	return 0;
}

static void *reader(void *arg)
{
	(void)arg;
	announce("sl-reader");
	block_in_pipe_read();
	return NULL;
}

static void *sleeper(void *arg)
{
	(void)arg;
	announce("sl-sleeper");
	sleep_in_nanosleep();
	return NULL;
}

static void *spinner(void *arg)
{
	(void)arg;
	announce("sl-spinner");
	spin_in_named_function();
	return NULL;
}

int main(int argc, char **argv)
{
	struct timespec feed = {0, FEED_EVERY_MS * 1000000L};
	pthread_t t[3];

	pid_t child_pid;
	int status;

	if (argc == 3 && !strcmp(argv[2], "child"))
		return child();
	if (argc != 2 || !(report = fopen(argv[1], "w")) || pipe(pipe_fds))
		return 1;
	fprintf(report, "pid %d\n", getpid());
	fflush(report);
	child_pid = fork();
	if (child_pid == 0) {
		execl("/proc/self/exe", argv[0], argv[1], "child", (char *)NULL);
		_exit(127);
	}
	pthread_create(&t[0], NULL, reader, NULL);
	pthread_create(&t[1], NULL, sleeper, NULL);
	pthread_create(&t[2], NULL, spinner, NULL);
	for (int i = 0; i < DURATION_MS / FEED_EVERY_MS; i++) {
		nanosleep(&feed, NULL);
		if (write(pipe_fds[1], "x", 1) != 1)
			return 1;
	}
	stop = 1;
	if (write(pipe_fds[1], "q", 1) != 1)
		return 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	if (child_pid < 0 || waitpid(child_pid, &status, 0) != child_pid || status != 0)
		return 1;
	fprintf(report, "child %d\n", child_pid);
	fputs("done\n", report);
	fclose(report);
	for (;;)
		pause();
}
