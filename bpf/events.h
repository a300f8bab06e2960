/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The ring buffer record ABI between bpf/schedlens.bpf.c and the Rust
 * decoder (src/recorder/abi.rs), and every constant the two sides share.
 *
 * Rust copies nothing from here by hand: libbpf-cargo generates Rust types
 * from the object's BTF (skeleton `types`), and the decoder reads records
 * through them. So everything shared must reach the BTF: structs are put
 * there by struct sl_abi below, and constants are enum members (a #define
 * leaves no trace in the object).
 *
 * Every record is a struct sl_header followed by exactly one body; BPF
 * reserves only header + that body (exec appends its filename, padded to a
 * size class). All fields are native endian and every struct has explicit
 * padding, so the generated Rust struct is the C one.
 */
#ifndef SCHEDLENS_EVENTS_H
#define SCHEDLENS_EVENTS_H

enum sl_limits {
	SL_COMM_LEN = 16,
	/* Longest exec filename kept; longer ones are cut (PATH_MAX would waste ring space). */
	SL_FILENAME_MAX = 512,
	/* Shards are named by bits of a u64 "announced" mask in task storage. */
	SL_MAX_SHARDS = 64,
	/* Per-CPU arrays are indexed by cpu & (SL_MAX_CPUS - 1); userspace refuses more CPUs. */
	SL_MAX_CPUS = 4096,
	/* Values per filter flag (--pid, --tgid, --comm), in fixed rodata arrays. */
	SL_MAX_FILTER = 16,
	/* Kernel names a handler copies (an IRQ's irqaction.name) keep this
	 * many bytes, NUL-padded; longer ones are cut. */
	SL_NAME_LEN = 28,
	/* Words of an IPI's target cpumask kept: its first 256 CPUs. */
	SL_IPI_MASK_WORDS = 4,
};

/* Kernel flags the programs test (the kernel defines them as macros, which
 * CO-RE does not carry). */
enum sl_kernel_flags {
	/* task_struct.flags of kernel threads (include/linux/sched.h). */
	SL_PF_KTHREAD = 0x00200000,
	/* The clone flag that makes a thread, not a process (include/uapi/linux/sched.h). */
	SL_CLONE_THREAD = 0x00010000,
	/* Task states (include/linux/sched.h) that make sched_switch report
	 * prev as D: TASK_UNINTERRUPTIBLE unless with TASK_NOLOAD (TASK_IDLE,
	 * reported as I), or an RT lock wait or the freezer; bits above D
	 * (stopped, traced, exit states, parked) report those instead. */
	SL_TASK_UNINTERRUPTIBLE = 0x0002,
	SL_TASK_REPORT_ABOVE_D = 0x007c,
	SL_TASK_NOLOAD = 0x0400,
	SL_TASK_RTLOCK_WAIT = 0x1000,
	SL_TASK_FROZEN = 0x8000,
	/* preempt_count fields (include/linux/preempt.h, not PREEMPT_RT): a
	 * softirq being served, a hard IRQ, an NMI. */
	SL_SOFTIRQ_OFFSET = 0x100,
	SL_HARDIRQ_MASK = 0xf0000,
	SL_NMI_MASK = 0xf00000,
};

/* The context bits of the kernel's ftrace common_flags (enum trace_flag_type,
 * include/linux/trace_events.h) as sl_waking.common_flags carries them, or
 * SL_FLAGS_UNKNOWN (above the byte the kernel writes) when this kernel's
 * preempt count cannot be read. The other common_flags bits (irqs off,
 * resched, bh off) are never set. */
enum sl_trace_flags {
	SL_TRACE_FLAG_HARDIRQ = 0x08,
	SL_TRACE_FLAG_SOFTIRQ = 0x10,
	SL_TRACE_FLAG_NMI = 0x40,
	SL_FLAGS_UNKNOWN = 0x100,
};

enum sl_type {
	SL_SWITCH = 1,
	SL_WAKING = 2,
	SL_WAKEUP_NEW = 3,
	SL_TASK_INFO = 4,
	SL_FORK = 5,
	SL_EXEC = 6,
	SL_EXIT = 7,
	SL_FREE = 8,
	SL_FORGET = 9,
	SL_RENAME = 10,
	SL_LOST = 11,
	SL_IRQ_ENTRY = 12,
	SL_IRQ_EXIT = 13,
	SL_SOFTIRQ_ENTRY = 14,
	SL_SOFTIRQ_EXIT = 15,
	SL_MIGRATE = 16,
	SL_CPU_IDLE = 17,
	SL_CPU_FREQUENCY = 18,
	SL_CPU_FREQUENCY_LIMITS = 19,
	/* Stacks (the block after sl_lost): */
	SL_STACK = 20,
	SL_IPI_SEND_CPU = 21,
	SL_IPI_SEND_CPUMASK = 22,
	SL_WORKQUEUE_QUEUE_WORK = 23,
	SL_WORKQUEUE_EXECUTE_START = 24,
	SL_WORKQUEUE_EXECUTE_END = 25,
	SL_BLOCKED_REASON = 26,
};

/* Set in sl_switch.prev_state when the switch was a preemption; otherwise the
 * field holds prev's raw (__state | exit_state) and userspace computes what the
 * tracepoint prints (__trace_sched_switch_state): cheaper than fls() in BPF.
 * Bit 31 is above every task state; as an enum member it makes the enum
 * unsigned (a GNU C extension clang accepts). */
enum sl_switch_state {
	SL_STATE_PREEMPT = 0x80000000u,
};

/* sl_task_info.flags */
enum sl_task_flags {
	SL_TASK_KTHREAD = 1,
};

struct sl_header {
	__u64 ts;   /* bpf_ktime_get_boot_ns at handler entry (schedlens.bpf.c, "Timestamps") */
	__s32 pid;  /* tid of the task running when the tracepoint fired */
	__u16 cpu;
	__u8 type;  /* enum sl_type */
	__u8 pad;
};

struct sl_switch {
	__u64 prev;
	__u64 next;
	__s32 prev_pid;
	__s32 next_pid;
	__u32 prev_state;
	__s16 prev_prio;
	__s16 next_prio;
};

/* sched_waking and sched_wakeup_new */
struct sl_waking {
	__u64 task;
	__s32 pid;
	__s32 target_cpu;
	__s32 prio;
	__u32 common_flags; /* enum sl_trace_flags: the waker's context */
};

struct sl_task_info {
	__u64 task;
	__s32 pid;
	__s32 tgid;
	__s32 ppid;  /* tgid of the real parent */
	__u32 flags; /* enum sl_task_flags */
	char comm[SL_COMM_LEN];
};

struct sl_fork {
	__u64 parent;
	__u64 child;
	__u64 clone_flags;
	__s32 parent_pid;
	__s32 child_pid;
	__s32 child_tgid;
	__u32 pad;
};

/* Followed by filename_len bytes of filename (no NUL), then padding up to
 * the record's size class. */
struct sl_exec {
	__u64 task;
	__s32 pid;
	__s32 old_pid;
	char comm[SL_COMM_LEN];
	__u32 filename_len;
	__u32 pad;
};

struct sl_exit {
	__u64 task;
	__s32 pid;
	__s32 tgid;
	__s32 prio;
	__u32 pad;
};

struct sl_free {
	__u64 task;
	__s32 pid;
	__s32 prio;
};

struct sl_forget {
	__u64 task;
};

struct sl_rename {
	__u64 task;
	__s32 pid;
	__u32 pad;
	char newcomm[SL_COMM_LEN];
};

struct sl_lost {
	__u64 count;
};

/* irq_handler_entry: the handler's IRQ number and name, NUL-padded. */
struct sl_irq_entry {
	__s32 irq;
	char name[SL_NAME_LEN];
};

struct sl_irq_exit {
	__s32 irq;
	__s32 ret; /* irqreturn_t: 1 handled, 0 not this device's */
};

/* softirq_entry and softirq_exit: the softirq number (HI, TIMER, NET_TX, ...). */
struct sl_softirq {
	__u32 vec;
	__u32 pad;
};

/* sched_migrate_task: the task moves from orig_cpu's runqueue to dest_cpu's. */
struct sl_migrate {
	__u64 task;
	__s32 pid;
	__s32 prio;
	__s32 orig_cpu;
	__s32 dest_cpu;
	__s32 running; /* 1: runnable or running (load balance, affinity); 0: waking */
	__u32 pad;
};

/* cpu_idle (value: the idle state entered, or -1 as u32 on leaving idle)
 * and cpu_frequency (value: the new frequency, kHz) of CPU cpu_id. */
struct sl_cpu_value {
	__u32 value;
	__u32 cpu_id;
};

/* cpu_frequency_limits: the policy's bounds for CPU cpu_id, kHz. */
struct sl_freq_limits {
	__u32 min_freq;
	__u32 max_freq;
	__u32 cpu_id;
	__u32 pad;
};

/* ipi_send_cpu: an IPI to CPU cpu, sent from callsite (a return address)
 * to run callback there (0 for a reschedule). Field names are the
 * tracepoint's: the writer names the fields with them. */
struct sl_ipi_send_cpu {
	__u64 callsite;
	__u64 callback;
	__u32 cpu;
	__u32 pad;
};

/* ipi_send_cpumask: the same to every CPU of cpumask (its first words). */
struct sl_ipi_send_cpumask {
	__u64 callsite;
	__u64 callback;
	__u64 cpumask[SL_IPI_MASK_WORDS];
};

/* workqueue_execute_start and _end: a kworker (the header's task) runs the
 * work item at `work`, whose function is `function`. */
struct sl_work {
	__u64 work;
	__u64 function;
};

/* workqueue_queue_work: the header's task queued `work` on workqueue
 * `workqueue` (NUL-padded), for CPU req_cpu (WORK_CPU_UNBOUND: any), to run
 * on the pool of CPU cpu (-1: an unbound pool). The kernel's ints are kept
 * as 32-bit values: Perfetto's protos declared them uint32 and now int32,
 * and a 32-bit varint reads as the same int under both. */
struct sl_queue_work {
	__u64 work;
	__u64 function;
	__u32 req_cpu;
	__u32 cpu;
	char workqueue[SL_NAME_LEN];
	__u32 pad;
};

/* sched_blocked_reason: at sched_switch, prev blocks in D (uninterruptible;
 * not TASK_IDLE's I) in kernel function `caller` (the first frame of its
 * kernel stack outside the scheduler, as get_wchan finds it; 0 if the walk
 * found none), waiting for I/O if io_wait (its in_iowait bit). */
struct sl_blocked_reason {
	__u64 caller;
	__s32 pid;
	__u32 io_wait;
};

enum sl_blocked_limits {
	/* Kernel frames walked to find the caller: the program's own frames
	 * (at most ~5), the scheduler's (~3-8: schedule, io_schedule,
	 * schedule_timeout, a mutex or rwsem slow path) and the caller. Frames
	 * past it are unwound for nothing, at ~0.1-0.2 us each. */
	SL_BLOCKED_DEPTH = 16,
};

/* Stacks. Kernel and user stacks are deduplicated in the `stacks` map
 * (BPF_MAP_TYPE_STACK_TRACE): a record carries their ids, and userspace reads
 * each id's frames once, at the end. Kinds are bits of the stack_kinds rodata. */
enum sl_stack_kind {
	SL_STACK_OFF_CPU = 1, /* prev at sched_switch, when it blocks (S or D) */
	SL_STACK_CPU = 2,     /* whoever runs, at each tick of the sampling clock */
	SL_STACK_WAKER = 4,   /* the waker at sched_waking */
};

enum sl_stack_limits {
	/* Frames per stack (the kernel's PERF_MAX_STACK_DEPTH, sysctl default). */
	SL_STACK_DEPTH = 127,
	/* A stack id when there is none: a kernel thread's user stack, or one the
	 * map could not take (full, or a hash collision: counted as lost). */
	SL_NO_STACK = -1,
};

/* The header's pid is the sampled task's tid. */
struct sl_stack {
	__s32 tgid;
	__s32 kstack; /* id in the stacks map, or SL_NO_STACK */
	__s32 ustack;
	__u8 kind;    /* enum sl_stack_kind, one bit */
	__u8 pad[3];
};

/* Per-CPU counters in .bss, two cache lines each against false sharing. */
struct sl_cpu_state {
	__u64 lost_pending; /* failed reservations not yet reported in the stream */
	__u64 lost_total;   /* all failed reservations, read by userspace at the end */
	__u64 events;       /* drives the every-Nth fill check for wakeups */
	/* Latest timestamp of this CPU's records: a lower bound for the next
	 * (schedlens.bpf.c, "Timestamps"). */
	__u64 last_ts;
	/* Stacks not taken, by why (the record still goes out, with SL_NO_STACK
	 * for that half): the stacks map was full (-ENOMEM), another stack held
	 * its hash bucket (-EEXIST), or a user task's user stack had no frames
	 * (-EFAULT: no user context, as in io_uring or vhost workers). */
	__u64 stack_map_full;
	__u64 stack_collided;
	__u64 stack_no_user;
	/* Stack records the ring had no room for (also counted as lost). */
	__u64 stack_dropped;
	/* Off-CPU stacks reused from the task's previous block instead of walked
	 * (schedlens.bpf.c, "Off-CPU stack reuse"); of the walks that could have
	 * reused, how many there were and how many found other stacks. */
	__u64 stack_reused;
	__u64 stack_checked;
	__u64 stack_stale;
	__u64 pad[5];
};

/*
 * Never read or written: one member of every record type and shared enum
 * makes the compiler emit them all into the object's BTF (a type used only
 * inside functions does not get there), from which the skeleton generates
 * their Rust twins. A new record or shared enum gets a member here.
 */
struct sl_abi {
	struct sl_header header;
	struct sl_switch switch_;
	struct sl_waking waking;
	struct sl_task_info task_info;
	struct sl_fork fork;
	struct sl_exec exec;
	struct sl_exit exit;
	struct sl_free free;
	struct sl_forget forget;
	struct sl_rename rename;
	struct sl_lost lost;
	struct sl_irq_entry irq_entry;
	struct sl_irq_exit irq_exit;
	struct sl_softirq softirq;
	struct sl_migrate migrate;
	struct sl_cpu_value cpu_value;
	struct sl_freq_limits freq_limits;
	struct sl_ipi_send_cpu ipi_send_cpu;
	struct sl_ipi_send_cpumask ipi_send_cpumask;
	struct sl_work work;
	struct sl_queue_work queue_work;
	struct sl_blocked_reason blocked_reason;
	enum sl_blocked_limits blocked_limits;
	struct sl_cpu_state cpu_state;
	enum sl_type type;
	enum sl_limits limits;
	enum sl_kernel_flags kernel_flags;
	enum sl_switch_state switch_state;
	enum sl_task_flags task_flags;
	enum sl_trace_flags trace_flags;
	struct sl_stack stack;
	enum sl_stack_kind stack_kind;
	enum sl_stack_limits stack_limits;
};

/* The sizes are also what the Rust decoder sees (it reads the generated
 * structs); asserting them here makes a layout change deliberate. */
_Static_assert(sizeof(struct sl_header) == 16, "sl_header");
_Static_assert(sizeof(struct sl_switch) == 32, "sl_switch");
_Static_assert(sizeof(struct sl_waking) == 24, "sl_waking");
_Static_assert(sizeof(struct sl_task_info) == 40, "sl_task_info");
_Static_assert(sizeof(struct sl_fork) == 40, "sl_fork");
_Static_assert(sizeof(struct sl_exec) == 40, "sl_exec");
_Static_assert(sizeof(struct sl_exit) == 24, "sl_exit");
_Static_assert(sizeof(struct sl_free) == 16, "sl_free");
_Static_assert(sizeof(struct sl_forget) == 8, "sl_forget");
_Static_assert(sizeof(struct sl_rename) == 32, "sl_rename");
_Static_assert(sizeof(struct sl_lost) == 8, "sl_lost");
_Static_assert(sizeof(struct sl_irq_entry) == 32, "sl_irq_entry");
_Static_assert(sizeof(struct sl_irq_exit) == 8, "sl_irq_exit");
_Static_assert(sizeof(struct sl_softirq) == 8, "sl_softirq");
_Static_assert(sizeof(struct sl_migrate) == 32, "sl_migrate");
_Static_assert(sizeof(struct sl_cpu_value) == 8, "sl_cpu_value");
_Static_assert(sizeof(struct sl_freq_limits) == 16, "sl_freq_limits");
_Static_assert(sizeof(struct sl_ipi_send_cpu) == 24, "sl_ipi_send_cpu");
_Static_assert(sizeof(struct sl_ipi_send_cpumask) == 48, "sl_ipi_send_cpumask");
_Static_assert(sizeof(struct sl_work) == 16, "sl_work");
_Static_assert(sizeof(struct sl_queue_work) == 56, "sl_queue_work");
_Static_assert(sizeof(struct sl_blocked_reason) == 16, "sl_blocked_reason");
_Static_assert(sizeof(struct sl_cpu_state) == 128, "sl_cpu_state");
_Static_assert(sizeof(struct sl_stack) == 16, "sl_stack");

#endif
