/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * schedlens recorder: scheduler tracepoints -> sharded ring buffers.
 *
 * Every record is an sl_header plus one body (events.h). Records go to the
 * ring of the shard the current CPU belongs to (CPUs grouped by LLC in
 * userspace), so one shard's stream is in per-CPU order for its CPUs.
 *
 * Task identity is the task_struct pointer. Before a record names a task in
 * a shard, the task is announced there with a TaskInfo record (pid, tgid,
 * parent, comm); task storage remembers which shards have seen it, so the
 * hot path sends only the event. Tasks without storage (creation failed) are
 * announced before every event that names them: correct, only bigger.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

/* Puts the record types into the BTF the Rust types are generated from
 * (events.h); nothing uses it. */
struct sl_abi sl_abi;

/* Ancestors checked when a pre-existing task is first seen with --pid/--tgid. */
#define SL_MAX_ANCESTORS 16
/* Check the ring's fill level only every this many events per CPU. */
#define SL_WAKEUP_CHECK_EVERY 32

/* Configuration, written by userspace before load (rodata: the verifier sees
 * the values, so a disabled filter costs nothing). */
const volatile u32 nr_shards = 1;
const volatile u8 cpu_shard[SL_MAX_CPUS];
/* Possible CPUs: the bits of a cpumask that name CPUs. */
const volatile u32 nr_cpus = 1;
/* Force a consumer wakeup once a shard holds more than this many bytes. */
const volatile u64 wakeup_bytes = 1 << 22;
const volatile bool filter_on = false;
const volatile u32 nr_filter_pids = 0;
const volatile u32 nr_filter_tgids = 0;
const volatile u32 nr_filter_comms = 0;
const volatile s32 filter_pids[SL_MAX_FILTER];
const volatile s32 filter_tgids[SL_MAX_FILTER];
/* NUL-padded comms, compared as two words. */
const volatile u64 filter_comms[SL_MAX_FILTER][2];

/* enum sl_stack_kind bits: which stacks to take (0: none, and no cost). */
const volatile u32 stack_kinds = 0;
/* Off-CPU stack reuse: at most this many blocks in a row of one task reuse
 * its previous block's stacks (0: every block walks them). */
const volatile u32 stack_reuse = 0;

/* The blocked group: sched_blocked_reason at each D block. */
const volatile bool blocked_reasons = false;
/* The kernel's scheduler and lock text, [start, end) each (from
 * /proc/kallsyms): the functions the kernel's get_wchan skips
 * (in_sched_functions) to name where a task blocks. 0: unknown, and a D
 * block's caller is not looked for. */
const volatile u64 sched_text_start = 0;
const volatile u64 sched_text_end = 0;
const volatile u64 lock_text_start = 0;
const volatile u64 lock_text_end = 0;

/* Where a CPU's preempt count is in the per-CPU area, from its runqueue
 * there (bytes; userspace reads both variables' places from the kernel's
 * BTF); 0: unknown. See context_flags. */
const volatile s64 preempt_count_from_rq = 0;
/* The kernel takes a load through bpf_rdonly_cast(ptr, 0) (6.17+). */
const volatile bool preempt_count_load = false;

/* Indexed by cpu; userspace reads lost_total at the end. */
struct sl_cpu_state cpu_state[SL_MAX_CPUS];

/* The template for the shard rings; userspace creates the real ones with the
 * chosen size and passes one as the inner map before load. */
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, SL_MAX_SHARDS);
	__type(key, u32);
	__array(values, struct ring);
} rings SEC(".maps");

enum verdict {
	V_UNKNOWN = 0,
	V_TRACED = 1,
	V_IGNORED = 2,
};

struct task_ctx {
	/* Shards whose stream carries this task's current name. */
	u64 announced;
	/* Shards that ever saw it: they get a Forget when it is freed. */
	u64 known;
	u64 clone_flags;
	u8 have_clone_flags;
	u8 verdict; /* enum verdict; only used with filter_on */
	/* Off-CPU stack reuse: blocks left that may reuse the stacks below. */
	u8 reuse_left;
	/* Whether block_caller is the caller of the last walked block's site. */
	u8 block_caller_known;
	u8 pad[4];
	/* The last walked block: where the task entered the kernel and how deep
	 * the kernel stack was, and the stacks walked there. */
	u64 block_ip;
	u64 block_sp;
	u64 block_bp;
	u64 block_nr;
	u64 block_ksp;
	s32 block_kstack;
	s32 block_ustack;
	/* sched_blocked_reason's caller at that site, for a D block that reuses
	 * its stacks: the same site, so the same function, without a walk. */
	u64 block_caller;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctx SEC(".maps");

struct exec_rec {
	struct sl_header h;
	struct sl_exec b;
	char filename[SL_FILENAME_MAX];
};

/* Exec records are variable size: built here, then copied into a record of
 * the smallest size class that holds them (emit_exec). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_rec);
} exec_scratch SEC(".maps");

/* The kernel stack blocked_caller walks (too big for the BPF stack beside
 * the handler's own frame). sched_switch runs with IRQs off: nothing on this
 * CPU can take it meanwhile. */
struct blocked_frames {
	u64 ip[SL_BLOCKED_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct blocked_frames);
} blocked_scratch SEC(".maps");

/* Deduplicated stacks; userspace sets max_entries (1 without --stacks) and
 * reads each id's frames at the end. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1);
	__type(key, u32);
	__uint(value_size, SL_STACK_DEPTH * sizeof(u64));
} stacks SEC(".maps");

#define REC(name, body)            \
	struct name {              \
		struct sl_header h; \
		struct body b;      \
	}
REC(rec_switch, sl_switch);
REC(rec_waking, sl_waking);
REC(rec_task_info, sl_task_info);
REC(rec_fork, sl_fork);
REC(rec_exit, sl_exit);
REC(rec_free, sl_free);
REC(rec_forget, sl_forget);
REC(rec_rename, sl_rename);
REC(rec_lost, sl_lost);
REC(rec_stack, sl_stack);

/* Where this CPU's records go, and when their handler was entered. */
struct emitter {
	void *rb;
	struct sl_cpu_state *cs;
	u64 t0;
	u32 cpu;
	u32 shard;
	s32 pid; /* header pid */
};

/* The handler's entry time: its first call, before anything that can wait. */
static __always_inline u64 handler_entry(void)
{
	return bpf_ktime_get_boot_ns();
}

static __always_inline bool emitter_init(struct emitter *e, u64 t0, s32 pid)
{
	u32 cpu = bpf_get_smp_processor_id();
	u32 idx = cpu & (SL_MAX_CPUS - 1);

	e->t0 = t0;
	e->cpu = cpu;
	e->cs = &cpu_state[idx];
	e->shard = cpu_shard[idx];
	e->pid = pid;
	e->rb = bpf_map_lookup_elem(&rings, &e->shard);
	return e->rb != NULL;
}

static __always_inline s32 current_pid(void)
{
	return (s32)bpf_get_current_pid_tgid();
}

static __always_inline void count_lost(struct sl_cpu_state *cs)
{
	__sync_fetch_and_add(&cs->lost_pending, 1);
	__sync_fetch_and_add(&cs->lost_total, 1);
}

/*
 * Timestamps. A record carries the time its handler was entered (t0, the
 * handler's first call), not the time it got its ring space: getting there
 * takes task storage, announcements and the ring's spinlock, which the CPUs
 * of a shard share, and a vCPU the host takes away at any of those moments
 * (or while another CPU holds the lock) made events tens to hundreds of
 * microseconds late.
 *
 * Ring order must still be time order per CPU (the writer and the importer
 * rely on it), and handlers nest on one CPU: task-context handlers (exec,
 * fork, exit, rename, free in softirq) run with IRQs on, so an IRQ's handler
 * (sched_waking) can run inside them. Nesting is strictly LIFO, and a nested
 * handler is entered after the one it interrupts. So after reserving, a
 * record takes ts = max(t0, last_ts), the latest time of this CPU's records
 * so far, and raises last_ts to ts:
 *  - a handler nested before our reservation is done by then and raised
 *    last_ts: its records, before ours in the ring, are not later than ours;
 *  - one nested after our reservation reads last_ts at least as it was when
 *    we read it, and its t0 is later than ours: its records, after ours in
 *    the ring, are not earlier than ours.
 * A record moves off its t0 only when a handler nested in its own wrote a
 * record before it: it then takes that record's time.
 */
static __always_inline u64 stamp(struct sl_cpu_state *cs, u64 t0)
{
	u64 last = *(volatile u64 *)&cs->last_ts;

	if (t0 <= last)
		return last;
	/* A failed exchange means a handler nested since the read raised
	 * last_ts, to a time not earlier than t0 (above): nothing to retry. */
	__sync_val_compare_and_swap(&cs->last_ts, last, t0);
	return t0;
}

static __always_inline void submit(struct emitter *e, void *rec)
{
	u64 flags = BPF_RB_NO_WAKEUP;

	/* Batched wakeups: the consumer also polls on a short timeout, so a
	 * forced wakeup is only needed when the ring is filling up. */
	if ((++e->cs->events % SL_WAKEUP_CHECK_EVERY) == 0 &&
	    bpf_ringbuf_query(e->rb, BPF_RB_AVAIL_DATA) > wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

/* Reserves a record of constant size in `rb` and fills its header (see
 * "Timestamps" above). Does not count a failure. */
static __always_inline void *reserve_in(struct emitter *e, void *rb, u64 size, u8 type)
{
	struct sl_header *h = bpf_ringbuf_reserve(rb, size, 0);

	if (!h)
		return NULL;
	h->ts = stamp(e->cs, e->t0);
	h->pid = e->pid;
	h->cpu = e->cpu;
	h->type = type;
	h->pad = 0;
	return h;
}

/* Reports earlier failed reservations before the next record of this CPU. */
static __attribute__((noinline)) void flush_lost(struct emitter *e)
{
	struct rec_lost *r;
	u64 n = e->cs->lost_pending;

	r = reserve_in(e, e->rb, sizeof(*r), SL_LOST);
	if (!r)
		return;
	r->b.count = n;
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	/* Subtract rather than zero: a nested handler may have added meanwhile. */
	__sync_fetch_and_add(&e->cs->lost_pending, -n);
}

/* Reserves a record of constant size in this CPU's shard; the Lost record,
 * if any, comes first. */
static __always_inline void *reserve(struct emitter *e, u64 size, u8 type)
{
	void *h;

	if (e->cs->lost_pending)
		flush_lost(e);
	h = reserve_in(e, e->rb, size, type);
	if (!h)
		count_lost(e->cs);
	return h;
}

static __always_inline struct task_ctx *task_ctx_of(struct task_struct *t)
{
	return bpf_task_storage_get(&task_ctx, t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

/* Announces `t` to this CPU's shard unless it already knows the task's
 * current name. False if the TaskInfo could not be written: the caller must
 * then drop its event, since a reader could not name the task. */
static __attribute__((noinline)) bool announce_slow(struct emitter *e, struct task_struct *t,
						    struct task_ctx *c)
{
	struct rec_task_info *r;
	u64 bit = 1ULL << (e->shard & (SL_MAX_SHARDS - 1));

	r = reserve(e, sizeof(*r), SL_TASK_INFO);
	if (!r)
		return false;
	r->b.task = (u64)t;
	r->b.pid = BPF_CORE_READ(t, pid);
	r->b.tgid = BPF_CORE_READ(t, tgid);
	r->b.ppid = BPF_CORE_READ(t, real_parent, tgid);
	r->b.flags = (BPF_CORE_READ(t, flags) & SL_PF_KTHREAD) ? SL_TASK_KTHREAD : 0;
	bpf_probe_read_kernel(r->b.comm, sizeof(r->b.comm), &t->comm);
	submit(e, r);
	if (c) {
		__sync_fetch_and_or(&c->announced, bit);
		__sync_fetch_and_or(&c->known, bit);
	}
	return true;
}

static __always_inline bool announce(struct emitter *e, struct task_struct *t, struct task_ctx *c)
{
	if (c && (c->announced & (1ULL << (e->shard & (SL_MAX_SHARDS - 1)))))
		return true;
	return announce_slow(e, t, c);
}

/* Reads a NUL-padded comm into two words for comparing with filter_comms. */
static __always_inline bool comm_matches(const u64 comm[2])
{
	for (u32 i = 0; i < SL_MAX_FILTER && i < nr_filter_comms; i++)
		if (filter_comms[i][0] == comm[0] && filter_comms[i][1] == comm[1])
			return true;
	return false;
}

static __always_inline bool id_in(const volatile s32 *ids, u32 n, s32 id)
{
	for (u32 i = 0; i < SL_MAX_FILTER && i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* The filter for a task seen for the first time: its pid, tgid or comm, or
 * an ancestor's pid or tgid (descendants of a traced task are traced; tasks
 * born during the recording inherit the verdict at task_newtask instead). */
static __attribute__((noinline)) bool task_matches(struct task_struct *t)
{
	u64 comm[2] = {};
	struct task_struct *a = t;

	bpf_probe_read_kernel(comm, sizeof(comm), &t->comm);
	if (comm_matches(comm))
		return true;
	for (u32 i = 0; i < SL_MAX_ANCESTORS && a; i++) {
		s32 pid = BPF_CORE_READ(a, pid);

		if (id_in(filter_pids, nr_filter_pids, pid) ||
		    id_in(filter_tgids, nr_filter_tgids, BPF_CORE_READ(a, tgid)))
			return true;
		if (pid <= 1)
			break;
		a = BPF_CORE_READ(a, real_parent);
	}
	return false;
}

static __always_inline bool traced(struct task_struct *t, struct task_ctx *c)
{
	bool v;

	if (!filter_on)
		return true;
	if (c && c->verdict != V_UNKNOWN)
		return c->verdict == V_TRACED;
	v = task_matches(t);
	if (c)
		c->verdict = v ? V_TRACED : V_IGNORED;
	return v;
}

/* task_cpu(): thread_info.cpu from 5.16, task_struct.cpu before. */
/* Sets up the emitter and announces the tasks the event names (`b` may be
 * NULL). False if the event must be dropped: a reader could not name its
 * tasks, so it is counted as lost. */
static __always_inline bool begin(struct emitter *e, u64 t0, s32 pid, struct task_struct *a,
				  struct task_ctx *ac, struct task_struct *b, struct task_ctx *bc)
{
	if (!emitter_init(e, t0, pid))
		return false;
	if (!announce(e, a, ac) || (b && !announce(e, b, bc))) {
		count_lost(e->cs);
		return false;
	}
	return true;
}

static __always_inline s32 task_cpu(struct task_struct *t)
{
	struct task_struct___old *o = (void *)t;

	/* A direct load, not a probe-read helper call: waking is a hot path. */
	if (bpf_core_field_exists(t->thread_info.cpu))
		return t->thread_info.cpu;
	return BPF_CORE_READ(o, cpu);
}

static __always_inline void emit_stack(void *ctx, struct emitter *e, struct task_struct *t,
				       u8 kind);
static __always_inline bool emit_off_cpu_stack(void *ctx, struct emitter *e,
					       struct task_struct *t, struct task_ctx *c);

/* Whether sched_switch reports a task of `state` (__state | exit_state) as
 * D, as __trace_sched_switch_state does (abi.rs report_state decodes it):
 * kernel threads idling in TASK_IDLE are I, not blocked, and the kernel's
 * load average and Perfetto's thread_state agree. */
static __always_inline bool reported_as_d(u32 state)
{
	if (state & (SL_TASK_RTLOCK_WAIT | SL_TASK_FROZEN))
		return true;
	return (state & (SL_TASK_UNINTERRUPTIBLE | SL_TASK_NOLOAD | SL_TASK_REPORT_ABOVE_D)) ==
	       SL_TASK_UNINTERRUPTIBLE;
}

static __always_inline bool in_sched_functions(u64 ip)
{
	return (ip >= sched_text_start && ip < sched_text_end) ||
	       (ip >= lock_text_start && ip < lock_text_end);
}

/* The kernel function the current task blocks in, as the kernel's
 * get_wchan names it: the first frame of its kernel stack past the
 * scheduler's. The innermost frames are this program's way in (the BPF
 * program, bpf_trace_run, __traceiter_sched_switch), which are not the
 * scheduler's; then come __schedule, schedule and the sleeping primitive's
 * (io_schedule, schedule_timeout, a mutex's or rwsem's slow path), all
 * __sched; the frame after them is the caller. 0 if the walk finds none. */
static __attribute__((noinline)) u64 blocked_caller(void *ctx)
{
	struct blocked_frames *f;
	bool in_sched = false;
	u32 zero = 0;
	long len;

	if (!sched_text_end)
		return 0;
	f = bpf_map_lookup_elem(&blocked_scratch, &zero);
	if (!f)
		return 0;
	len = bpf_get_stack(ctx, f->ip, sizeof(f->ip), 0);
	for (u32 i = 0; i < SL_BLOCKED_DEPTH && i < len / sizeof(u64); i++) {
		u64 ip = f->ip[i];

		if (in_sched_functions(ip))
			in_sched = true;
		else if (in_sched)
			return ip;
	}
	return 0;
}

REC(rec_blocked_reason, sl_blocked_reason);

/*
 * sched_blocked_reason for prev, which blocks in D at this switch: where it
 * blocks and whether it waits for I/O. Android's kernel event fires when the
 * task is woken (from the enqueue), reading the sleeping task's stack; here
 * it is taken at the switch, where the stack is the current task's (a
 * bpf_get_stack of the running task, not a walk of another CPU's task that
 * may be waking up meanwhile), the sched_waking hot path pays nothing, and a
 * block still going on when the recording stops is named too. Importers
 * attach the event to the task's latest blocked thread_state row, which is
 * the D row this switch opens, as long as the event comes after the switch:
 * it is stamped 1 ns after it, since the two go to different streams of a
 * CPU (a compact switch, a full FtraceEvent), which trace_processor's sorter
 * interleaves on equal timestamps as its draining of each happens to fall.
 */
static __attribute__((noinline)) void emit_blocked_reason(void *ctx, struct emitter *e,
							  struct task_struct *prev,
							  struct task_ctx *c, bool reused)
{
	struct rec_blocked_reason *r;

	e->t0++;
	r = reserve(e, sizeof(*r), SL_BLOCKED_REASON);
	if (!r)
		return;
	/* A block whose off-CPU stacks were reused is at the site of the last
	 * walked one: its caller is that site's, if a D block there found it. */
	if (reused && c && c->block_caller_known) {
		r->b.caller = c->block_caller;
	} else {
		r->b.caller = blocked_caller(ctx);
		if (c) {
			c->block_caller = r->b.caller;
			c->block_caller_known = 1;
		}
	}
	r->b.pid = prev->pid;
	r->b.io_wait = BPF_CORE_READ_BITFIELD_PROBED(prev, in_iowait);
	submit(e, r);
}

static __always_inline int on_switch(void *ctx, u64 t0, bool preempt, struct task_struct *prev,
				     struct task_struct *next, u32 prev_state)
{
	struct task_ctx *pc = task_ctx_of(prev);
	struct task_ctx *nc = task_ctx_of(next);
	struct rec_switch *r;
	struct emitter e;
	bool reused = false;
	u32 state;

	if (filter_on && !traced(prev, pc) && !traced(next, nc))
		return 0;
	if (!begin(&e, t0, prev->pid, prev, pc, next, nc))
		return 0;
	r = reserve(&e, sizeof(*r), SL_SWITCH);
	if (!r)
		return 0;
	r->b.prev = (u64)prev;
	r->b.next = (u64)next;
	r->b.prev_pid = prev->pid;
	r->b.next_pid = next->pid;
	state = prev_state | (u32)prev->exit_state;
	r->b.prev_state = preempt ? SL_STATE_PREEMPT : state;
	r->b.prev_prio = prev->prio;
	r->b.next_prio = next->prio;
	submit(&e, r);
	if (preempt || (filter_on && !traced(prev, pc)))
		return 0;
	/* Blocked (S or D; not TASK_IDLE's I): why it waits. prev is still the
	 * current task here, whose stacks bpf_get_stackid takes. */
	if ((stack_kinds & SL_STACK_OFF_CPU) && (prev_state & 3) && !(prev_state & SL_TASK_NOLOAD))
		reused = emit_off_cpu_stack(ctx, &e, prev, pc);
	/* After the off-CPU stack: it takes the switch's time, and this the next
	 * nanosecond. */
	if (blocked_reasons && reported_as_d(state))
		emit_blocked_reason(ctx, &e, prev, pc, reused);
	return 0;
}

/* From 5.18 the tracepoint passes the state it prints. */
SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	return on_switch(ctx, handler_entry(), preempt, prev, next, prev_state);
}

/* Before 5.18 (loaded instead of handle_switch there): prev's state as the
 * tracepoint would have read it. */
SEC("tp_btf/sched_switch")
int BPF_PROG(handle_switch_legacy, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	u64 t0 = handler_entry();
	struct task_struct___old *o = (void *)prev;
	u32 state;

	if (bpf_core_field_exists(prev->__state))
		state = BPF_CORE_READ(prev, __state);
	else
		state = BPF_CORE_READ(o, state);
	return on_switch(ctx, t0, preempt, prev, next, state);
}

/* The context bits of the kernel's common_flags for an event here, as
 * tracing_gen_ctx() computes them from the CPU's preempt count: an NMI, a
 * hard IRQ, a softirq being served (not one merely disabled). The count is a
 * per-CPU variable that typed ksyms cannot name on a kernel without
 * CONFIG_KALLSYMS_ALL (this VM's), so it is found from another one this
 * program can reach: the CPU's runqueue, which the current task's fair-class
 * runqueue points to. */
static __always_inline u32 context_flags(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct rq *rq;
	int pc;

	if (!preempt_count_from_rq || !bpf_core_field_exists(t->se.cfs_rq))
		return SL_FLAGS_UNKNOWN;
	/* Direct loads (BTF pointers); a NULL one reads as 0. */
	rq = t->se.cfs_rq->rq;
	if (!rq || rq->cpu != bpf_get_smp_processor_id())
		return SL_FLAGS_UNKNOWN;
	if (preempt_count_load && bpf_ksym_exists(bpf_rdonly_cast))
		/* From 6.17 the verifier lets a program load through such an
		 * untrusted pointer (a fault reads 0): a plain load, ~30 ns
		 * cheaper than the probe-read helper. */
		pc = *(int *)bpf_rdonly_cast((void *)rq + preempt_count_from_rq, 0);
	else if (bpf_probe_read_kernel(&pc, sizeof(pc), (void *)rq + preempt_count_from_rq))
		return SL_FLAGS_UNKNOWN;
	return (pc & SL_NMI_MASK ? SL_TRACE_FLAG_NMI : 0) |
	       (pc & SL_HARDIRQ_MASK ? SL_TRACE_FLAG_HARDIRQ : 0) |
	       (pc & SL_SOFTIRQ_OFFSET ? SL_TRACE_FLAG_SOFTIRQ : 0);
}

static __always_inline int on_waking(void *ctx, u64 t0, struct task_struct *p, u8 type)
{
	struct task_ctx *c = task_ctx_of(p);
	struct rec_waking *r;
	struct emitter e;

	if (!traced(p, c))
		return 0;
	if (!begin(&e, t0, current_pid(), p, c, NULL, NULL))
		return 0;
	r = reserve(&e, sizeof(*r), type);
	if (!r)
		return 0;
	r->b.task = (u64)p;
	r->b.pid = p->pid;
	r->b.target_cpu = task_cpu(p);
	r->b.prio = p->prio;
	r->b.common_flags = context_flags();
	submit(&e, r);
	/* Who wakes it, from where: the current task's stacks. */
	if ((stack_kinds & SL_STACK_WAKER) && type == SL_WAKING)
		emit_stack(ctx, &e, bpf_get_current_task_btf(), SL_STACK_WAKER);
	return 0;
}

SEC("tp_btf/sched_waking")
int BPF_PROG(handle_waking, struct task_struct *p)
{
	return on_waking(ctx, handler_entry(), p, SL_WAKING);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(handle_wakeup_new, struct task_struct *p)
{
	return on_waking(ctx, handler_entry(), p, SL_WAKEUP_NEW);
}

/* The only place clone flags are visible: keep them for sched_process_fork,
 * and pass the parent's filter verdict on to the child. */
SEC("tp_btf/task_newtask")
int BPF_PROG(handle_newtask, struct task_struct *task, u64 clone_flags)
{
	struct task_ctx *c = task_ctx_of(task);
	struct task_struct *parent;

	if (!c)
		return 0;
	c->clone_flags = clone_flags;
	c->have_clone_flags = 1;
	if (filter_on) {
		parent = bpf_get_current_task_btf();
		if (traced(parent, task_ctx_of(parent)))
			c->verdict = V_TRACED;
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	u64 t0 = handler_entry();
	struct task_ctx *pc = task_ctx_of(parent);
	struct task_ctx *cc = task_ctx_of(child);
	struct rec_fork *r;
	struct emitter e;

	if (filter_on && !traced(parent, pc) && !traced(child, cc))
		return 0;
	if (!begin(&e, t0, parent->pid, parent, pc, child, cc))
		return 0;
	r = reserve(&e, sizeof(*r), SL_FORK);
	if (!r)
		return 0;
	r->b.parent = (u64)parent;
	r->b.child = (u64)child;
	r->b.parent_pid = parent->pid;
	r->b.child_pid = child->pid;
	r->b.child_tgid = child->tgid;
	r->b.pad = 0;
	if (cc && cc->have_clone_flags)
		r->b.clone_flags = cc->clone_flags;
	else
		/* task_newtask missed (attached in between, or no storage):
		 * the one flag readers need follows from the tgids. */
		r->b.clone_flags = child->tgid == parent->tgid ? SL_CLONE_THREAD : 0;
	submit(&e, r);
	return 0;
}

/* Exec record sizes (header + body + filename room) short of the largest. */
#define EXEC_FIXED (sizeof(struct sl_header) + sizeof(struct sl_exec))
#define EXEC_SMALL 128
#define EXEC_MEDIUM 256

/* `size` is a constant at each (inlined) call: the verifier needs one. */
static __always_inline void emit_exec(struct emitter *e, struct exec_rec *s, u32 size)
{
	void *r = reserve(e, size, SL_EXEC);

	if (!r)
		return;
	/* The header is stamped; copy the body and as much filename as fits. */
	bpf_probe_read_kernel(r + sizeof(struct sl_header), size - sizeof(struct sl_header),
			      (void *)s + sizeof(struct sl_header));
	submit(e, r);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	u64 t0 = handler_entry();
	struct task_ctx *c = task_ctx_of(p);
	u32 zero = 0;
	struct exec_rec *s;
	struct emitter e;
	long len;
	u64 comm[2] = {};

	/* A --comm filter matches the new name too. */
	if (filter_on && c && c->verdict != V_TRACED) {
		bpf_probe_read_kernel(comm, sizeof(comm), &p->comm);
		if (comm_matches(comm))
			c->verdict = V_TRACED;
	}
	if (!traced(p, c))
		return 0;
	if (!begin(&e, t0, p->pid, p, c, NULL, NULL))
		return 0;
	s = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!s)
		return 0;
	s->b.task = (u64)p;
	s->b.pid = p->pid;
	s->b.old_pid = old_pid;
	bpf_probe_read_kernel(s->b.comm, sizeof(s->b.comm), &p->comm);
	len = bpf_probe_read_kernel_str(s->filename, sizeof(s->filename), BPF_CORE_READ(bprm, filename));
	/* len counts the NUL; a failed read leaves an empty filename. */
	len = len > 0 ? len - 1 : 0;
	if (len > SL_FILENAME_MAX)
		len = SL_FILENAME_MAX;
	s->b.filename_len = len;
	s->b.pad = 0;
	/* bpf_ringbuf_output would copy the exact length but cannot stamp the
	 * time once the record's ring position is known ("Timestamps"):
	 * reserve the smallest of three size classes instead; the reader
	 * ignores bytes past filename_len. */
	if (len <= EXEC_SMALL - EXEC_FIXED)
		emit_exec(&e, s, EXEC_SMALL);
	else if (len <= EXEC_MEDIUM - EXEC_FIXED)
		emit_exec(&e, s, EXEC_MEDIUM);
	else
		emit_exec(&e, s, sizeof(*s));
	/* The comm changed: every shard must hear the new one before its next use. */
	if (c)
		c->announced = 0;
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *p)
{
	u64 t0 = handler_entry();
	struct task_ctx *c = task_ctx_of(p);
	struct rec_exit *r;
	struct emitter e;

	if (!traced(p, c))
		return 0;
	if (!begin(&e, t0, p->pid, p, c, NULL, NULL))
		return 0;
	r = reserve(&e, sizeof(*r), SL_EXIT);
	if (!r)
		return 0;
	r->b.task = (u64)p;
	r->b.pid = p->pid;
	r->b.tgid = p->tgid;
	r->b.prio = p->prio;
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

/* The task_struct is released (RCU callback, any CPU): its address may be
 * reused from now on, so every shard that knows it must drop it. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(handle_free, struct task_struct *p)
{
	u64 t0 = handler_entry();
	struct task_ctx *c = bpf_task_storage_get(&task_ctx, p, 0, 0);
	u64 known = c ? c->known : ~0ULL;
	bool is_traced = traced(p, c);
	struct rec_forget *f;
	struct rec_free *r;
	struct emitter e;
	void *rb;
	u32 own;

	if (!known)
		return 0;
	if (!emitter_init(&e, t0, current_pid()))
		return 0;
	own = e.shard;
	if (is_traced && announce(&e, p, c)) {
		r = reserve(&e, sizeof(*r), SL_FREE);
		if (r) {
			r->b.task = (u64)p;
			r->b.pid = p->pid;
			r->b.prio = p->prio;
			submit(&e, r);
		}
		known &= ~(1ULL << (own & (SL_MAX_SHARDS - 1)));
	}
	for (u32 i = 0; i < SL_MAX_SHARDS && i < nr_shards; i++) {
		/* A copy as the key: taking i's address would move the loop
		 * counter to the stack, where the verifier loses its bounds. */
		u32 key = i;

		if (!(known & (1ULL << i)))
			continue;
		rb = bpf_map_lookup_elem(&rings, &key);
		if (!rb)
			continue;
		/* Not reserve(): this CPU's Lost records belong in its own shard. */
		f = reserve_in(&e, rb, sizeof(*f), SL_FORGET);
		if (!f) {
			count_lost(e.cs);
			continue;
		}
		f->b.task = (u64)p;
		bpf_ringbuf_submit(f, BPF_RB_NO_WAKEUP);
	}
	return 0;
}

SEC("tp_btf/task_rename")
int BPF_PROG(handle_rename, struct task_struct *task, const char *comm)
{
	u64 t0 = handler_entry();
	struct task_ctx *c = task_ctx_of(task);
	struct rec_rename *r;
	struct emitter e;
	u64 newcomm[2] = {};

	bpf_probe_read_kernel_str(newcomm, sizeof(newcomm), comm);
	if (filter_on && c && c->verdict != V_TRACED && comm_matches(newcomm))
		c->verdict = V_TRACED;
	if (!traced(task, c))
		return 0;
	if (!begin(&e, t0, current_pid(), task, c, NULL, NULL))
		return 0;
	r = reserve(&e, sizeof(*r), SL_RENAME);
	if (!r)
		return 0;
	r->b.task = (u64)task;
	r->b.pid = task->pid;
	r->b.pad = 0;
	__builtin_memcpy(r->b.newcomm, newcomm, sizeof(newcomm));
	submit(&e, r);
	if (c)
		c->announced = 0;
	return 0;
}

/* Interrupts name no task: the header's pid is the task they interrupted. */
static __always_inline bool begin_cpu_event(struct emitter *e, u64 t0)
{
	return emitter_init(e, t0, current_pid());
}

REC(rec_irq_entry, sl_irq_entry);
REC(rec_irq_exit, sl_irq_exit);
REC(rec_softirq, sl_softirq);

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(handle_irq_entry, int irq, struct irqaction *action)
{
	u64 t0 = handler_entry();
	struct rec_irq_entry *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_IRQ_ENTRY);
	if (!r)
		return 0;
	r->b.irq = irq;
	/* A failed or short read leaves the rest NUL: the writer stops there. */
	__builtin_memset(r->b.name, 0, sizeof(r->b.name));
	bpf_probe_read_kernel_str(r->b.name, sizeof(r->b.name), BPF_CORE_READ(action, name));
	submit(&e, r);
	return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(handle_irq_exit, int irq, struct irqaction *action, int ret)
{
	u64 t0 = handler_entry();
	struct rec_irq_exit *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_IRQ_EXIT);
	if (!r)
		return 0;
	r->b.irq = irq;
	r->b.ret = ret;
	submit(&e, r);
	return 0;
}

static __always_inline int on_softirq(u64 t0, unsigned int vec, u8 type)
{
	struct rec_softirq *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), type);
	if (!r)
		return 0;
	r->b.vec = vec;
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(handle_softirq_entry, unsigned int vec)
{
	return on_softirq(handler_entry(), vec, SL_SOFTIRQ_ENTRY);
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(handle_softirq_exit, unsigned int vec)
{
	return on_softirq(handler_entry(), vec, SL_SOFTIRQ_EXIT);
}

REC(rec_migrate, sl_migrate);

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(handle_migrate, struct task_struct *p, int dest_cpu)
{
	u64 t0 = handler_entry();
	struct task_ctx *c = task_ctx_of(p);
	struct task_struct___old *o = (void *)p;
	struct rec_migrate *r;
	struct emitter e;
	long state;

	if (!traced(p, c))
		return 0;
	if (!begin(&e, t0, current_pid(), p, c, NULL, NULL))
		return 0;
	r = reserve(&e, sizeof(*r), SL_MIGRATE);
	if (!r)
		return 0;
	r->b.task = (u64)p;
	r->b.pid = p->pid;
	r->b.prio = p->prio;
	r->b.orig_cpu = task_cpu(p);
	r->b.dest_cpu = dest_cpu;
	/* A wakeup moves the task while it is TASK_WAKING; any other move
	 * (load balancing, affinity, hotplug) finds it TASK_RUNNING (0). */
	if (bpf_core_field_exists(p->__state))
		state = BPF_CORE_READ(p, __state);
	else
		state = BPF_CORE_READ(o, state);
	r->b.running = state == 0;
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

REC(rec_cpu_value, sl_cpu_value);
REC(rec_freq_limits, sl_freq_limits);

static __always_inline int on_cpu_value(u64 t0, u32 value, u32 cpu_id, u8 type)
{
	struct rec_cpu_value *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), type);
	if (!r)
		return 0;
	r->b.value = value;
	r->b.cpu_id = cpu_id;
	submit(&e, r);
	return 0;
}

SEC("tp_btf/cpu_idle")
int BPF_PROG(handle_cpu_idle, unsigned int state, unsigned int cpu_id)
{
	return on_cpu_value(handler_entry(), state, cpu_id, SL_CPU_IDLE);
}

SEC("tp_btf/cpu_frequency")
int BPF_PROG(handle_cpu_frequency, unsigned int frequency, unsigned int cpu_id)
{
	return on_cpu_value(handler_entry(), frequency, cpu_id, SL_CPU_FREQUENCY);
}

SEC("tp_btf/cpu_frequency_limits")
int BPF_PROG(handle_cpu_frequency_limits, struct cpufreq_policy *policy)
{
	u64 t0 = handler_entry();
	struct rec_freq_limits *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_CPU_FREQUENCY_LIMITS);
	if (!r)
		return 0;
	r->b.min_freq = BPF_CORE_READ(policy, min);
	r->b.max_freq = BPF_CORE_READ(policy, max);
	r->b.cpu_id = BPF_CORE_READ(policy, cpu);
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

REC(rec_ipi_send_cpu, sl_ipi_send_cpu);
REC(rec_ipi_send_cpumask, sl_ipi_send_cpumask);

/* IPIs are sent from the task that needs them (a waker, membarrier, a TLB
 * shootdown): the header's pid is that task. */
SEC("tp_btf/ipi_send_cpu")
int BPF_PROG(handle_ipi_cpu, unsigned int cpu, unsigned long callsite, void *callback)
{
	u64 t0 = handler_entry();
	struct rec_ipi_send_cpu *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_IPI_SEND_CPU);
	if (!r)
		return 0;
	r->b.callsite = callsite;
	r->b.callback = (u64)callback;
	r->b.cpu = cpu;
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

SEC("tp_btf/ipi_send_cpumask")
int BPF_PROG(handle_ipi_mask, struct cpumask *cpumask, unsigned long callsite, void *callback)
{
	u64 t0 = handler_entry();
	u32 words = nr_cpus > SL_IPI_MASK_WORDS * 64 ? SL_IPI_MASK_WORDS : (nr_cpus + 63) / 64;
	struct rec_ipi_send_cpumask *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_IPI_SEND_CPUMASK);
	if (!r)
		return 0;
	r->b.callsite = callsite;
	r->b.callback = (u64)callback;
	/* The mask's words that hold possible CPUs (it may be no longer: an
	 * off-stack mask is allocated for them), and of the last one only
	 * their bits; a failed read leaves zeros. */
	__builtin_memset(r->b.cpumask, 0, sizeof(r->b.cpumask));
	bpf_probe_read_kernel(r->b.cpumask, words * sizeof(u64), cpumask);
	if (nr_cpus < words * 64)
		r->b.cpumask[(words - 1) & (SL_IPI_MASK_WORDS - 1)] &= (1ULL << (nr_cpus % 64)) - 1;
	submit(&e, r);
	return 0;
}

REC(rec_work, sl_work);
REC(rec_queue_work, sl_queue_work);

/* Work items run in kworkers: the header's pid is the kworker, whose
 * thread the work is a slice of. */
static __always_inline int on_work(u64 t0, struct work_struct *work, u64 function, u8 type)
{
	struct rec_work *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), type);
	if (!r)
		return 0;
	r->b.work = (u64)work;
	r->b.function = function;
	submit(&e, r);
	return 0;
}

SEC("tp_btf/workqueue_execute_start")
int BPF_PROG(handle_work_start, struct work_struct *work)
{
	u64 t0 = handler_entry();

	/* A direct load (a BTF pointer), as the tracepoint reads it. */
	return on_work(t0, work, (u64)work->func, SL_WORKQUEUE_EXECUTE_START);
}

/* The work item may be freed by now: the kernel passes its function. A raw
 * tracepoint: tp_btf refuses to read an argument that is a function pointer
 * (its BTF type is no struct). */
SEC("raw_tp/workqueue_execute_end")
int handle_work_end(struct bpf_raw_tracepoint_args *ctx)
{
	u64 t0 = handler_entry();

	return on_work(t0, (struct work_struct *)ctx->args[0], ctx->args[1],
		       SL_WORKQUEUE_EXECUTE_END);
}

SEC("tp_btf/workqueue_queue_work")
int BPF_PROG(handle_queue_work, int req_cpu, struct pool_workqueue *pwq, struct work_struct *work)
{
	u64 t0 = handler_entry();
	struct rec_queue_work *r;
	struct emitter e;

	if (!begin_cpu_event(&e, t0))
		return 0;
	r = reserve(&e, sizeof(*r), SL_WORKQUEUE_QUEUE_WORK);
	if (!r)
		return 0;
	/* Direct loads through the BTF pointers, as the tracepoint reads them. */
	r->b.work = (u64)work;
	r->b.function = (u64)work->func;
	r->b.req_cpu = req_cpu;
	r->b.cpu = pwq->pool->cpu;
	/* A failed or short read leaves the rest NUL: the writer stops there. */
	__builtin_memset(r->b.workqueue, 0, sizeof(r->b.workqueue));
	bpf_probe_read_kernel_str(r->b.workqueue, sizeof(r->b.workqueue), pwq->wq->name);
	r->b.pad = 0;
	submit(&e, r);
	return 0;
}

/* Stacks (events.h, "Stacks"). */

/* A stack's id in the stacks map, or SL_NO_STACK. An empty kernel stack
 * (-EFAULT: the kernel half of a sample taken in user mode) is no loss; a
 * full map (-ENOMEM), a hash collision (-EEXIST) or an empty user stack of a
 * user task is, and is counted by its reason (only on this failure path). */
static __always_inline s32 stack_id(void *ctx, struct emitter *e, u64 flags)
{
	long id = bpf_get_stackid(ctx, &stacks, flags);

	if (id >= 0)
		return id;
	if (id == -12)
		__sync_fetch_and_add(&e->cs->stack_map_full, 1);
	else if (id == -17)
		__sync_fetch_and_add(&e->cs->stack_collided, 1);
	else if (id == -14 && (flags & BPF_F_USER_STACK))
		__sync_fetch_and_add(&e->cs->stack_no_user, 1);
	return SL_NO_STACK;
}

/* The kernel and user stacks of `t`, the current task, as a record after
 * the event `e` just emitted. Kernel threads have no user stack. */
static __always_inline struct rec_stack *stack_rec(struct emitter *e, struct task_struct *t,
						    u8 kind)
{
	struct rec_stack *r = reserve(e, sizeof(*r), SL_STACK);

	if (!r) {
		__sync_fetch_and_add(&e->cs->stack_dropped, 1);
		return NULL;
	}
	r->h.pid = t->pid;
	r->b.tgid = t->tgid;
	r->b.kind = kind;
	r->b.pad[0] = r->b.pad[1] = r->b.pad[2] = 0;
	return r;
}

static __always_inline void walk_stacks(void *ctx, struct emitter *e, struct task_struct *t,
					struct rec_stack *r)
{
	r->b.kstack = stack_id(ctx, e, 0);
	r->b.ustack = (t->flags & SL_PF_KTHREAD) ? SL_NO_STACK
						 : stack_id(ctx, e, BPF_F_USER_STACK);
}

static __always_inline void emit_stack(void *ctx, struct emitter *e, struct task_struct *t,
				       u8 kind)
{
	struct rec_stack *r = stack_rec(e, t, kind);

	if (!r)
		return;
	walk_stacks(ctx, e, t, r);
	submit(e, r);
}

/*
 * Off-CPU stack reuse. Walking the kernel and user stacks is most of what an
 * off-CPU stack costs (an ORC unwind of the kernel stack, a frame-pointer
 * walk of the user stack through user memory), and a task that blocks often
 * blocks in the same place: a block whose user registers at kernel entry
 * (ip, sp, bp, the syscall number) and kernel stack depth all equal the
 * task's last walked block reuses that block's stack ids. This is an
 * approximation: the same registers and depth can hide other callers
 * further up the user stack or another kernel path of the same depth. It is
 * bounded and measured: after stack_reuse reuses in a row the stacks are
 * walked again, and a walk that could have reused counts whether it found
 * the same stacks (stack_checked, stack_stale), which the summary reports.
 * True when this block reused them (a D block's reason then reuses the
 * site's caller too).
 */
static __always_inline bool emit_off_cpu_stack(void *ctx, struct emitter *e,
					       struct task_struct *t, struct task_ctx *c)
{
	struct pt_regs *regs;
	struct rec_stack *r;
	u64 ip, sp, bp, nr, ksp;
	bool same;

	if (!stack_reuse || !c) {
		emit_stack(ctx, e, t, SL_STACK_OFF_CPU);
		return false;
	}
	r = stack_rec(e, t, SL_STACK_OFF_CPU);
	if (!r)
		return false;
	regs = (struct pt_regs *)bpf_task_pt_regs(t);
	/* Direct loads (a BTF pointer), not probe-read helper calls. */
	ip = regs->ip;
	sp = regs->sp;
	bp = regs->bp;
	nr = regs->orig_ax;
	/* This program's frame lives on the task's kernel stack: its address is
	 * the kernel stack's depth here. */
	asm volatile("%0 = r10" : "=r"(ksp));
	same = c->block_ip == ip && c->block_sp == sp && c->block_bp == bp &&
	       c->block_nr == nr && c->block_ksp == ksp;
	if (same && c->reuse_left) {
		c->reuse_left--;
		r->b.kstack = c->block_kstack;
		r->b.ustack = c->block_ustack;
		__sync_fetch_and_add(&e->cs->stack_reused, 1);
		submit(e, r);
		return true;
	}
	walk_stacks(ctx, e, t, r);
	if (same) {
		__sync_fetch_and_add(&e->cs->stack_checked, 1);
		if (r->b.kstack != c->block_kstack || r->b.ustack != c->block_ustack)
			__sync_fetch_and_add(&e->cs->stack_stale, 1);
	}
	c->block_ip = ip;
	c->block_sp = sp;
	c->block_bp = bp;
	c->block_nr = nr;
	c->block_ksp = ksp;
	c->block_kstack = r->b.kstack;
	c->block_ustack = r->b.ustack;
	c->block_caller_known = 0;
	/* A stack the map could not take is not reused: the next block retries. */
	c->reuse_left = r->b.kstack == SL_NO_STACK ||
				(r->b.ustack == SL_NO_STACK && !(t->flags & SL_PF_KTHREAD))
			? 0
			: stack_reuse;
	submit(e, r);
	return false;
}

/* --stacks cpu: attached to a CPU-clock perf event on every CPU (bpf.rs).
 * The idle task is not sampled: its CPU is idle. */
SEC("perf_event")
int handle_cpu_sample(void *ctx)
{
	u64 t0 = handler_entry();
	struct task_struct *t = bpf_get_current_task_btf();
	struct emitter e;

	if (!t->pid)
		return 0;
	if (filter_on && !traced(t, task_ctx_of(t)))
		return 0;
	if (!emitter_init(&e, t0, t->pid))
		return 0;
	emit_stack(ctx, &e, t, SL_STACK_CPU);
	return 0;
}
