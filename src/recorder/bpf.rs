//! Loading, configuring and attaching the BPF programs, and the shard rings.

use crate::model::MAX_CPUS;
use crate::model::ksyms::SchedText;
use crate::model::stack::StackKind;
use crate::recorder::catalog;
use crate::recorder::skel::types::sl_cpu_state;
use crate::recorder::skel::{SchedlensLinks, SchedlensSkel, SchedlensSkelBuilder};
use crate::recorder::{MAX_FILTER, MAX_SHARDS};
use anyhow::{Context, bail};
use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, OpenObject};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

/// What the BPF programs counted of their stacks over a recording.
#[derive(Debug, Default, Clone, Copy)]
pub struct StackCounters {
    /// Stack halves not taken, by why: the stack map was full, another
    /// stack held the hash bucket, a user task's user stack had no frames.
    pub map_full: u64,
    pub collided: u64,
    pub no_user: u64,
    /// Stack records the ring had no room for (also among the lost events).
    pub dropped: u64,
    /// Off-CPU stacks taken from the task's previous block, not walked
    /// (schedlens.bpf.c, "Off-CPU stack reuse").
    pub reused: u64,
    /// Walks at a block that matched the previous one (a reuse's re-check),
    /// and how many of them found other stacks.
    pub checked: u64,
    pub stale: u64,
}

/// Which sched_switch program to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchVariant {
    /// 5.18+: the tracepoint passes prev_state.
    WithState,
    /// Before 5.18: read prev's state from its task_struct.
    Legacy,
}

impl SwitchVariant {
    /// Picks the variant from the kernel's BTF: the tracepoint's prototype
    /// (`btf_trace_sched_switch`: ctx + 4 args from 5.18) rather than the
    /// version number, which backports make unreliable.
    pub fn detect() -> anyhow::Result<SwitchVariant> {
        let btf = libbpf_rs::Btf::from_vmlinux().context("reading the kernel's BTF")?;
        let td: libbpf_rs::btf::types::Typedef<'_> = btf
            .type_by_name("btf_trace_sched_switch")
            .context("the kernel's BTF has no sched_switch tracepoint")?;
        let proto = td
            .next_type()
            .and_then(|ptr| ptr.next_type())
            .and_then(|ty| libbpf_rs::btf::types::FuncProto::try_from(ty).ok())
            .context("unexpected BTF type for btf_trace_sched_switch")?;
        Ok(if proto.len() >= 5 {
            SwitchVariant::WithState
        } else {
            SwitchVariant::Legacy
        })
    }
}

/// Where a CPU's preempt count is in the per-CPU area, in bytes from its
/// runqueue (`runqueues`), which the BPF programs reach from the current task
/// (schedlens.bpf.c, context_flags): from the kernel's BTF, whose `.data..percpu`
/// section places both. The count is `__preempt_count` on x86-64 before 6.2
/// and from 6.15, `pcpu_hot.preempt_count` in between; None without either.
pub fn preempt_count_from_rq(btf: &libbpf_rs::Btf) -> Option<i64> {
    use libbpf_rs::btf::types::{DataSec, MemberAttr, Struct, Var};
    use std::ffi::OsStr;
    let sec: DataSec<'_> = btf.type_by_name(".data..percpu")?;
    let place = |name: &str| {
        sec.iter()
            .find(|v| {
                btf.type_by_id::<Var<'_>>(v.ty)
                    .is_some_and(|var| var.name() == Some(OsStr::new(name)))
            })
            .map(|v| i64::from(v.offset))
    };
    let count = place("__preempt_count").or_else(|| {
        // The struct, not the variable of the same name.
        let hot = btf
            .type_by_kind::<Struct<'_>>()
            .find(|s| s.name() == Some(OsStr::new("pcpu_hot")))?;
        let member = hot
            .iter()
            .find(|m| m.name == Some(OsStr::new("preempt_count")))?;
        let MemberAttr::Normal { offset: bits } = member.attr else {
            return None;
        };
        Some(place("pcpu_hot")? + i64::from(bits / 8))
    })?;
    Some(count - place("runqueues")?)
}

/// Whether the running kernel's release is at least `major.minor` (an
/// unreadable release is not).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

/// What the programs record (defaults: the whole system).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pids: Vec<i32>,
    pub tgids: Vec<i32>,
    /// Up to 15 bytes each (TASK_COMM_LEN - 1).
    pub comms: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.tgids.is_empty() && self.comms.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Shard of each possible CPU.
    pub cpu_shard: Vec<u8>,
    pub nr_shards: usize,
    /// Bytes per shard ring: a power of two, a multiple of the page size.
    pub ring_size: u32,
    pub filter: Filter,
    pub switch: SwitchVariant,
    /// The event groups recorded (catalog.rs names them).
    pub groups: Vec<&'static str>,
    /// Stack kinds to record (none: no stack map, no sampling).
    pub stacks: Vec<StackKind>,
    /// Rate of `--stacks cpu`, per CPU.
    pub sample_hz: u64,
    /// `--stack-reuse`: blocks in a row of one task that may reuse its
    /// previous block's off-CPU stacks (0: walk them at every block).
    pub stack_reuse: u8,
    /// Distinct stacks the stack map holds (kernel and user count apart).
    pub stack_map_entries: u32,
    /// CPUs to sample on (the online ones).
    pub online_cpus: Vec<u32>,
    /// The scheduler's text, skipped to find where a task blocks in D
    /// (unknown: sched_blocked_reason names no function).
    pub sched_text: SchedText,
}

/// The loaded and (after [`Recorder::attach`]) attached programs.
pub struct Recorder<'obj> {
    skel: SchedlensSkel<'obj>,
    /// One ring per shard, also referenced from the `rings` map.
    rings: Vec<MapHandle>,
    /// `--stacks cpu`: the sampling program attached to a CPU-clock perf
    /// event per online CPU (each link owns its event; dropped on detach).
    sample_links: Vec<libbpf_rs::Link>,
    /// The loaded programs of [`catalog::ATTACH_FIRST`], and their links
    /// once attached (the skeleton attaches the rest).
    first: Vec<String>,
    first_links: Vec<libbpf_rs::Link>,
    cpu_samples: Option<(Vec<u32>, u64)>,
}

impl<'obj> Recorder<'obj> {
    /// Creates the rings and loads the programs with `cfg` (nothing attached yet).
    pub fn load(
        object: &'obj mut MaybeUninit<OpenObject>,
        cfg: &Config,
    ) -> anyhow::Result<Recorder<'obj>> {
        if cfg.nr_shards == 0 || cfg.nr_shards > MAX_SHARDS {
            bail!("the number of shards must be 1 to {MAX_SHARDS}");
        }
        if cfg.cpu_shard.len() > MAX_CPUS {
            bail!(
                "this machine has {} possible CPUs; the recorder supports {MAX_CPUS}",
                cfg.cpu_shard.len()
            );
        }
        let f = &cfg.filter;
        if f.pids.len().max(f.tgids.len()).max(f.comms.len()) > MAX_FILTER {
            bail!("at most {MAX_FILTER} values per filter flag are supported");
        }
        if f.comms.iter().any(|c| c.len() > 15) {
            bail!("a --comm name has at most 15 bytes");
        }
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let rings = (0..cfg.nr_shards)
            .map(|i| {
                MapHandle::create(
                    MapType::RingBuf,
                    Some(format!("sl_ring{i}")),
                    0,
                    0,
                    cfg.ring_size,
                    &opts,
                )
                .with_context(|| {
                    format!(
                        "creating a {} MiB ring buffer (try a smaller --ring-size)",
                        cfg.ring_size >> 20
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;

        let mut open = SchedlensSkelBuilder::default()
            .open(object)
            .context("opening the BPF object")?;
        let ro = open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("the BPF object has no .rodata")?;
        ro.nr_shards = cfg.nr_shards as u32;
        ro.cpu_shard[..cfg.cpu_shard.len()].copy_from_slice(&cfg.cpu_shard);
        ro.nr_cpus = cfg.cpu_shard.len() as u32;
        // Wake the consumer early once a ring is a quarter full.
        ro.wakeup_bytes = u64::from(cfg.ring_size / 4);
        ro.filter_on = !f.is_empty();
        ro.nr_filter_pids = f.pids.len() as u32;
        ro.nr_filter_tgids = f.tgids.len() as u32;
        ro.nr_filter_comms = f.comms.len() as u32;
        ro.filter_pids[..f.pids.len()].copy_from_slice(&f.pids);
        ro.filter_tgids[..f.tgids.len()].copy_from_slice(&f.tgids);
        for (slot, comm) in ro.filter_comms.iter_mut().zip(&f.comms) {
            let mut bytes = [0u8; 16];
            bytes[..comm.len()].copy_from_slice(comm.as_bytes());
            slot[0] = u64::from_ne_bytes(bytes[..8].try_into().unwrap_or_default());
            slot[1] = u64::from_ne_bytes(bytes[8..].try_into().unwrap_or_default());
        }
        // Without it, wakings say their context is unknown.
        ro.preempt_count_from_rq = libbpf_rs::Btf::from_vmlinux()
            .ok()
            .and_then(|btf| preempt_count_from_rq(&btf))
            .unwrap_or(0);
        ro.preempt_count_load = kernel_at_least(6, 17);
        ro.blocked_reasons = cfg.groups.contains(&catalog::BLOCKED);
        ro.sched_text_start = cfg.sched_text.sched.0;
        ro.sched_text_end = cfg.sched_text.sched.1;
        ro.lock_text_start = cfg.sched_text.lock.0;
        ro.lock_text_end = cfg.sched_text.lock.1;
        ro.stack_kinds = cfg.stacks.iter().map(|k| u32::from(k.bit())).sum();
        ro.stack_reuse = u32::from(cfg.stack_reuse);
        let sample_cpus = cfg.stacks.contains(&StackKind::Cpu);
        open.progs.handle_cpu_sample.set_autoload(sample_cpus);
        if !cfg.stacks.is_empty() {
            open.maps
                .stacks
                .set_max_entries(cfg.stack_map_entries)
                .context("sizing the stack map")?;
        }
        let legacy = cfg.switch == SwitchVariant::Legacy;
        open.progs.handle_switch.set_autoload(!legacy);
        open.progs.handle_switch_legacy.set_autoload(legacy);
        let mut first = Vec::new();
        for mut prog in open.open_object_mut().progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            if !catalog::program_wanted(&name, &cfg.groups) {
                prog.set_autoload(false);
            } else if catalog::ATTACH_FIRST.contains(&name.as_str()) {
                prog.set_autoattach(false);
                first.push(name);
            }
        }
        open.maps
            .rings
            .set_inner_map_fd(rings[0].as_fd())
            .context("setting the ring buffer template")?;
        let skel = open.load().context(
            "loading the BPF programs (the kernel rejected them; run with \
             LIBBPF_LOG=1 for the verifier log)",
        )?;
        for (i, ring) in rings.iter().enumerate() {
            let key = (i as u32).to_ne_bytes();
            let fd = ring.as_fd().as_raw_fd().to_ne_bytes();
            skel.maps
                .rings
                .update(&key, &fd, MapFlags::ANY)
                .context("installing a shard ring")?;
        }
        Ok(Recorder {
            skel,
            rings,
            sample_links: Vec::new(),
            first,
            first_links: Vec::new(),
            cpu_samples: sample_cpus.then(|| (cfg.online_cpus.clone(), cfg.sample_hz)),
        })
    }

    pub fn attach(&mut self) -> anyhow::Result<()> {
        for prog in self.skel.object().progs_mut() {
            let name = prog.name().to_string_lossy();
            if self.first.iter().any(|f| *f == name) {
                let link = prog.attach().with_context(|| format!("attaching {name}"))?;
                self.first_links.push(link);
            }
        }
        // The skeleton attaches the perf_event program to nothing (its section
        // names no event): attach it per CPU below.
        self.skel
            .attach()
            .context("attaching to the scheduler tracepoints")?;
        if let Some((cpus, hz)) = self.cpu_samples.take() {
            for cpu in cpus {
                let fd = open_cpu_clock(cpu, hz)?;
                let link = self
                    .skel
                    .progs
                    .handle_cpu_sample
                    .attach_perf_event(fd.as_raw_fd())
                    .with_context(|| format!("attaching the CPU sampler on cpu {cpu}"))?;
                // The link owns the event now: libbpf closes it with the link.
                let _ = fd.into_raw_fd();
                self.sample_links.push(link);
            }
        }
        Ok(())
    }

    /// Detaches every program: no new records after this returns.
    pub fn detach(&mut self) {
        self.skel.links = SchedlensLinks::default();
        self.sample_links.clear();
        self.first_links.clear();
    }

    /// The frames of stack `id` in the stack map, innermost first (None if
    /// the map has no such stack).
    pub fn stack_frames(&self, id: u32) -> Option<Vec<u64>> {
        read_stack(&self.skel.maps.stacks, id)
    }

    /// A handle on the stack map, for a consumer that reads stacks while
    /// recording.
    pub fn stack_map(&self) -> anyhow::Result<MapHandle> {
        MapHandle::try_from(&self.skel.maps.stacks).context("opening the stack map")
    }

    /// The stack counters, summed over the first `ncpus` CPUs.
    pub fn stack_counters(&self, ncpus: usize) -> StackCounters {
        StackCounters {
            map_full: self.cpu_sum(ncpus, |s| &s.stack_map_full),
            collided: self.cpu_sum(ncpus, |s| &s.stack_collided),
            no_user: self.cpu_sum(ncpus, |s| &s.stack_no_user),
            dropped: self.cpu_sum(ncpus, |s| &s.stack_dropped),
            reused: self.cpu_sum(ncpus, |s| &s.stack_reused),
            checked: self.cpu_sum(ncpus, |s| &s.stack_checked),
            stale: self.cpu_sum(ncpus, |s| &s.stack_stale),
        }
    }

    fn cpu_sum(&self, ncpus: usize, field: impl Fn(&sl_cpu_state) -> &u64) -> u64 {
        match self.skel.maps.bss_data.as_deref() {
            Some(bss) => bss
                .cpu_state
                .iter()
                .take(ncpus)
                // As lost_total in lost_per_cpu.
                .map(|s| unsafe { std::ptr::read_volatile(field(s)) })
                .sum(),
            None => 0,
        }
    }

    /// The shard rings, for the consumers (they stay referenced by the
    /// programs' map until the recorder is dropped).
    pub fn take_rings(&mut self) -> Vec<MapHandle> {
        std::mem::take(&mut self.rings)
    }

    /// Per loaded program, by name: the runs the kernel skipped because a BPF
    /// program was already running on that CPU (its recursion protection),
    /// so the events they were for reached no handler.
    pub fn recursion_misses(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut misses = Vec::new();
        for prog in self.skel.object().progs().filter(|p| p.autoload()) {
            let name = prog.name().to_string_lossy().into_owned();
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut len = size_of_val(&info) as u32;
            // SAFETY: the fd is a loaded program's (autoload), and `info` is
            // a writable bpf_prog_info of `len` bytes.
            let ret = unsafe {
                libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                    prog.as_fd().as_raw_fd(),
                    &mut info,
                    &mut len,
                )
            };
            if ret != 0 {
                bail!(
                    "reading the kernel's counters of BPF program {name}: {}",
                    std::io::Error::from_raw_os_error(-ret)
                );
            }
            misses.push((name, info.recursion_misses));
        }
        Ok(misses)
    }

    /// Records lost because a ring was full, by CPU (up to `ncpus`).
    pub fn lost_per_cpu(&self, ncpus: usize) -> Vec<u64> {
        match self.skel.maps.bss_data.as_deref() {
            Some(bss) => bss
                .cpu_state
                .iter()
                .take(ncpus)
                // Written by BPF concurrently; a plain read of a u64 counter
                // after detach is exact, and before it a snapshot.
                .map(|s| unsafe { std::ptr::read_volatile(&s.lost_total) })
                .collect(),
            None => vec![0; ncpus],
        }
    }
}

/// A perf event counting CPU time on `cpu` (any task), overflowing `hz`
/// times a second: what the sampling program is attached to.
fn open_cpu_clock(cpu: u32, hz: u64) -> anyhow::Result<OwnedFd> {
    use libbpf_rs::libbpf_sys as sys;
    let mut attr = sys::perf_event_attr {
        type_: sys::PERF_TYPE_SOFTWARE,
        size: size_of::<sys::perf_event_attr>() as u32,
        config: u64::from(sys::PERF_COUNT_SW_CPU_CLOCK),
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_freq = hz;
    attr.set_freq(1);
    // SAFETY: `attr` is a perf_event_attr of the size it declares; the
    // other arguments are plain integers (any task, this CPU, no group).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const sys::perf_event_attr,
            -1i32,
            cpu as i32,
            -1i32,
            libc::c_ulong::from(sys::PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        bail!(
            "opening a CPU-clock perf event on cpu {cpu} for --stacks cpu: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Assigns CPUs to shards. `groups` are CPUs sharing an LLC, in topology
/// order. Without `requested`, one shard per group (groups beyond
/// MAX_SHARDS share); with it, the CPUs in topology order are cut into that
/// many contiguous, equal pieces, so neighbours stay together.
pub fn plan_shards(
    groups: &[Vec<u32>],
    ncpus: usize,
    requested: Option<usize>,
) -> (Vec<u8>, usize) {
    let mut cpu_shard = vec![0u8; ncpus];
    let ordered: Vec<u32> = groups
        .iter()
        .flatten()
        .copied()
        .filter(|&c| (c as usize) < ncpus)
        .collect();
    match requested {
        None => {
            let n = groups.len().clamp(1, MAX_SHARDS);
            for (g, cpus) in groups.iter().enumerate() {
                for &c in cpus {
                    if let Some(slot) = cpu_shard.get_mut(c as usize) {
                        *slot = (g % n) as u8;
                    }
                }
            }
            (cpu_shard, n)
        }
        Some(req) => {
            let n = req.clamp(1, MAX_SHARDS.min(ordered.len().max(1)));
            for (i, &c) in ordered.iter().enumerate() {
                cpu_shard[c as usize] = (i * n / ordered.len()) as u8;
            }
            (cpu_shard, n)
        }
    }
}

/// The frames of stack `id` in a stack map, innermost first (None if the map
/// has no such stack).
pub fn read_stack(map: &impl MapCore, id: u32) -> Option<Vec<u64>> {
    let value = map.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
    Some(
        value
            .chunks_exact(8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
            .take_while(|&ip| ip != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_llc_groups_by_default() {
        let groups = vec![vec![0, 1, 4, 5], vec![2, 3, 6, 7]];
        let (map, n) = plan_shards(&groups, 8, None);
        assert_eq!(n, 2);
        assert_eq!(map, vec![0, 0, 1, 1, 0, 0, 1, 1]);
    }

    #[test]
    fn requested_shards_split_topology_order() {
        let groups = vec![vec![0, 1, 4, 5], vec![2, 3, 6, 7]];
        let (map, n) = plan_shards(&groups, 8, Some(4));
        assert_eq!(n, 4);
        assert_eq!(map, vec![0, 0, 2, 2, 1, 1, 3, 3]);
        let (map, n) = plan_shards(&groups, 8, Some(1));
        assert_eq!((map, n), (vec![0; 8], 1));
        // More shards than CPUs: one per CPU.
        let (_, n) = plan_shards(&[vec![0, 1]], 2, Some(64));
        assert_eq!(n, 2);
    }
}
