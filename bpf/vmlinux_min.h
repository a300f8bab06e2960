/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The few kernel types schedlens.bpf.c uses, instead of a generated
 * vmlinux.h. Structs are preserve_access_index: libbpf relocates every field
 * access against the running kernel's BTF (CO-RE), so only the fields named
 * here matter and their order or offsets here do not.
 */
#ifndef SCHEDLENS_VMLINUX_MIN_H
#define SCHEDLENS_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* bpf_get_stackid flags. */
enum {
	BPF_F_USER_STACK = 1 << 8,
};

struct thread_info {
	__u32 cpu;
} __attribute__((preserve_access_index));

/* A CPU's runqueue (a per-CPU variable), reached from a task through its
 * fair-class runqueue (CONFIG_FAIR_GROUP_SCHED). */
struct rq {
	int cpu;
} __attribute__((preserve_access_index));

struct cfs_rq {
	struct rq *rq;
} __attribute__((preserve_access_index));

struct sched_entity {
	struct cfs_rq *cfs_rq;
} __attribute__((preserve_access_index));

struct task_struct {
	struct thread_info thread_info;
	struct sched_entity se;
	unsigned int __state;
	unsigned int flags;
	int prio;
	int exit_state;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	char comm[16];
	unsigned in_iowait:1;
} __attribute__((preserve_access_index));

/* Kernels before 5.14 name the state field `state` (a long) and, before 5.16,
 * keep the cpu in task_struct rather than thread_info. */
struct task_struct___old {
	long state;
	unsigned int cpu;
} __attribute__((preserve_access_index));

/* x86-64: the user registers saved at kernel entry (bpf_task_pt_regs). */
struct pt_regs {
	unsigned long bp;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long sp;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

struct cpufreq_policy {
	unsigned int cpu;
	unsigned int min;
	unsigned int max;
} __attribute__((preserve_access_index));

struct irqaction {
	const char *name;
} __attribute__((preserve_access_index));

struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

struct cpumask {
	unsigned long bits[1];
} __attribute__((preserve_access_index));

struct work_struct;
typedef void (*work_func_t)(struct work_struct *work);

struct work_struct {
	work_func_t func;
} __attribute__((preserve_access_index));

/* kernel/workqueue.c's private structs, as far as workqueue_queue_work
 * reads them. */
struct workqueue_struct {
	char name[24];
} __attribute__((preserve_access_index));

struct worker_pool {
	int cpu;
} __attribute__((preserve_access_index));

struct pool_workqueue {
	struct worker_pool *pool;
	struct workqueue_struct *wq;
} __attribute__((preserve_access_index));

#endif
