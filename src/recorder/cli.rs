//! Flag parsing and the checks `schedlens trace` makes before touching BPF.

use crate::model::stack::StackKind;
use crate::recorder::MAX_SHARDS;
#[cfg(feature = "record")]
use anyhow::{Context, bail};
#[cfg(feature = "record")]
use std::path::{Path, PathBuf};
use std::time::Duration;
#[cfg(feature = "record")]
use std::time::SystemTime;

/// Parses --duration: a humantime span ("10s", "1m30s", "500ms"), not zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 1m30s, 500ms)"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(d)
}

/// `--trigger latency>5ms`: snapshot when a task waits longer than this
/// between being woken (sched_waking) and running (sched_switch in). On the
/// wire (recorder service, MCP) it is the same string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerSpec {
    pub latency: Duration,
}

impl std::fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "latency>{}", humantime::format_duration(self.latency))
    }
}

impl serde::Serialize for TriggerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TriggerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_trigger(&s).map_err(serde::de::Error::custom)
    }
}

/// A flight recording's latency trigger and whose wakeups fire it: the
/// `--trigger*` flags of `schedlens trace --flight`, and the same fields
/// (`trigger`, `trigger_pid`, `trigger_comm`) of a recorder service request
/// and of the MCP `record` tool.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    clap::Args,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct LatencyTrigger {
    /// Flight recording: snapshot when a task waits longer than this from its wakeup to
    /// running, e.g. latency>5ms (at most once per debounce, by default the window)
    #[arg(id = "trigger", long = "trigger", value_name = "latency>DURATION", value_parser = parse_trigger)]
    #[serde(rename = "trigger", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub spec: Option<TriggerSpec>,
    /// Only this thread's wakeups fire the trigger
    #[arg(id = "trigger_pid", long = "trigger-pid", value_name = "PID", value_parser = parse_id)]
    #[serde(
        rename = "trigger_pid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pid: Option<i32>,
    /// Only wakeups of tasks with this name fire the trigger
    #[arg(id = "trigger_comm", long = "trigger-comm", value_name = "NAME", value_parser = parse_comm)]
    #[serde(
        rename = "trigger_comm",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub comm: Option<String>,
}

impl LatencyTrigger {
    /// The filter given without a trigger, as (flag, wire field) names.
    pub fn orphan_filter(&self) -> Option<(&'static str, &'static str)> {
        if self.spec.is_some() {
            None
        } else if self.pid.is_some() {
            Some(("--trigger-pid", "trigger_pid"))
        } else if self.comm.is_some() {
            Some(("--trigger-comm", "trigger_comm"))
        } else {
            None
        }
    }
}

/// What fired a latency trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fired {
    /// The thread that waited.
    pub pid: i32,
    /// From its wakeup to running, in nanoseconds.
    pub latency_ns: u64,
    /// When it finally ran (CLOCK_BOOTTIME ns, the trace's clock).
    pub ts: u64,
}

/// Parses `latency>DURATION`.
pub fn parse_trigger(s: &str) -> Result<TriggerSpec, String> {
    let Some(value) = s.trim().strip_prefix("latency>") else {
        return Err(format!(
            "{s:?}: the trigger is latency>DURATION, e.g. latency>5ms"
        ));
    };
    let latency = parse_duration(value)?;
    Ok(TriggerSpec { latency })
}

/// Parses a size: bytes with an optional K/M/G suffix (binary units, "B" or
/// "iB" allowed after it), more than zero.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        _ => (lower, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{t:?} is not a size (examples: 16M, 8MiB, 1G)"))?;
    let bytes = n
        .checked_shl(shift)
        .filter(|b| b >> shift == n)
        .ok_or_else(|| format!("{t:?} is too large"))?;
    if bytes == 0 {
        return Err("the size must be more than zero".into());
    }
    Ok(bytes)
}

/// Parses --ring-size: a size (see [`parse_size`]) that is a power of two
/// from 64 KiB to 1 GiB (ring buffers are page multiples and the kernel
/// requires a power of two).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let bytes = parse_size(s)?;
    if !(64 << 10..=1 << 30).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!(
            "{t:?}: the ring size must be a power of two from 64K to 1G (e.g. 8M, 16M)"
        ));
    }
    Ok(bytes as u32)
}

/// Parses --pid/--tgid values.
pub fn parse_id(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("{s:?} is not a process id (a number above 0)")),
    }
}

/// Parses --comm: a kernel task name, 1 to 15 bytes (TASK_COMM_LEN - 1).
pub fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 || s.contains('\0') {
        return Err(format!(
            "{s:?}: a task name has 1 to 15 bytes (as `ps -o comm` shows it)"
        ));
    }
    Ok(s.to_string())
}

/// Parses --shards: 1 to 64.
pub fn parse_shards(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if (1..=MAX_SHARDS).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: the number of shards must be 1 to {MAX_SHARDS}"
        )),
    }
}

/// The stack kinds of `--stacks`, each once, in [`StackKind::ALL`] order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackKinds(pub Vec<StackKind>);

/// Parses --stacks: kind names separated by commas, or "all".
pub fn parse_stacks(s: &str) -> Result<StackKinds, String> {
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim) {
        match StackKind::from_name(name) {
            Some(k) => kinds.push(k),
            None if name == "all" => kinds.extend(StackKind::ALL),
            None => {
                let names: Vec<&str> = StackKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!(
                    "{name:?} is not a stack kind (one of {}, or all)",
                    names.join(", ")
                ));
            }
        }
    }
    kinds.sort_unstable();
    kinds.dedup();
    Ok(StackKinds(kinds))
}

/// Parses --sample-hz: 1 to 10000 samples a second per CPU.
pub fn parse_sample_hz(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(v) if (1..=10_000).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: the sampling rate must be 1 to 10000 (Hz)")),
    }
}

#[cfg(feature = "record")]
/// schedlens-<hostname>-<UTC time>.pftrace in the current directory.
pub fn default_output() -> PathBuf {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    // 2026-11-05T14:30:12Z -> 20261105T143012Z: sorts and is a valid file name.
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    PathBuf::from(format!("schedlens-{host}-{stamp}.pftrace"))
}

#[cfg(feature = "record")]
/// Fails unless this process may load tracing BPF programs: root, or the
/// effective capabilities CAP_BPF and CAP_PERFMON.
pub fn check_privileges() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    if !(has(CAP_BPF) && has(CAP_PERFMON)) {
        bail!(
            "recording needs root or CAP_BPF+CAP_PERFMON: run it with sudo, or grant them with \
             `sudo setcap cap_bpf,cap_perfmon+ep $(command -v schedlens)`"
        );
    }
    Ok(())
}

#[cfg(feature = "record")]
/// Fails unless the kernel exposes its BTF (needed for tp_btf programs and CO-RE).
pub fn check_btf() -> anyhow::Result<()> {
    let btf = Path::new("/sys/kernel/btf/vmlinux");
    if !btf.exists() {
        bail!(
            "{} is missing: the recorder needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
             (5.15 or newer with BTF)",
            btf.display()
        );
    }
    Ok(())
}

#[cfg(feature = "record")]
/// Fails unless every --pid, --tgid and --comm value names a task that runs
/// now: a filter that matches nothing records an empty trace, most often
/// because of a typo or a process that already exited. A --comm may also be
/// a name CMD will exec (`cmd_given`). --wait-for-task skips this check.
pub fn check_filter_matches(
    proc: &Path,
    pids: &[i32],
    tgids: &[i32],
    comms: &[String],
    cmd_given: bool,
) -> anyhow::Result<()> {
    let hint = "add --wait-for-task to record it once it starts";
    for pid in pids {
        // /proc/TID resolves for every thread, though only leaders are listed.
        if !proc.join(pid.to_string()).exists() {
            bail!("--pid {pid} matches no task running now; {hint}");
        }
    }
    for tgid in tgids {
        let status =
            std::fs::read_to_string(proc.join(format!("{tgid}/status"))).unwrap_or_default();
        let leads = status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .is_some_and(|v| v.trim() == tgid.to_string());
        if !leads {
            bail!("--tgid {tgid} matches no process running now; {hint}");
        }
    }
    if cmd_given {
        return Ok(());
    }
    let mut unmatched: Vec<&String> = comms.iter().collect();
    if unmatched.is_empty() {
        return Ok(());
    }
    let tasks = std::fs::read_dir(proc)
        .with_context(|| format!("listing {}", proc.display()))?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_dir(e.path().join("task")).ok())
        .flatten()
        .flatten();
    for task in tasks {
        // A task that exits mid-scan has no comm left to match.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        unmatched.retain(|c| **c != comm.trim_end_matches('\n'));
        if unmatched.is_empty() {
            return Ok(());
        }
    }
    bail!(
        "--comm {} matches no task running now; {hint}",
        unmatched[0]
    )
}

#[cfg(feature = "record")]
/// The invoking user's uid/gid when under sudo: `-- CMD` runs as them (not
/// as root) and the trace file is given to them.
pub fn sudo_ids() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let (Ok(uid), Ok(gid)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) else {
        return Ok(None);
    };
    let uid: u32 = uid.parse().context("SUDO_UID is not a number")?;
    let gid: u32 = gid.parse().context("SUDO_GID is not a number")?;
    Ok(Some((uid, gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("16M"), Ok(16 << 20));
        assert_eq!(parse_ring_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_ring_size("64k"), Ok(64 << 10));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        assert_eq!(parse_ring_size("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "M",
            "3M",
            "2G",
            "4K",
            "-1M",
            "99999999999999999999G",
            "16 MB x",
        ] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn trigger_syntax() {
        assert_eq!(
            parse_trigger("latency>5ms"),
            Ok(TriggerSpec {
                latency: Duration::from_millis(5)
            })
        );
        for bad in ["latency<5ms", "latency>", "latency>0ms", "5ms", "cpu>5ms"] {
            assert!(parse_trigger(bad).is_err(), "{bad}");
        }
        // The wire form is the flag's, and reads back the same.
        for spec in ["latency>5ms", "latency>1ms 500us", "latency>2s"] {
            let t = parse_trigger(spec).unwrap();
            assert_eq!(t.to_string(), spec);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<TriggerSpec>(&json).unwrap(), t);
        }
        assert!(serde_json::from_str::<TriggerSpec>("\"latency<5ms\"").is_err());
    }

    #[test]
    fn durations_ids_shards() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_id("42"), Ok(42));
        assert!(parse_id("0").is_err());
        assert!(parse_id("-3").is_err());
        assert_eq!(
            parse_stacks("cpu,off-cpu,cpu"),
            Ok(StackKinds(vec![StackKind::OffCpu, StackKind::Cpu]))
        );
        assert_eq!(parse_stacks("all"), Ok(StackKinds(StackKind::ALL.to_vec())));
        assert!(parse_stacks("offcpu").is_err());
        assert_eq!(parse_sample_hz("99"), Ok(99));
        assert!(parse_sample_hz("0").is_err());
        assert_eq!(parse_shards("4"), Ok(4));
        assert!(parse_shards("0").is_err());
        assert!(parse_shards("65").is_err());
    }

    #[cfg(feature = "record")]
    #[test]
    fn filters_must_match_a_running_task() {
        let proc = Path::new("/proc");
        let me = std::process::id() as i32;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let comm = comm.trim_end().to_string();
        let absent = (999_999..)
            .find(|p| !proc.join(p.to_string()).exists())
            .unwrap();
        let check = |pids: &[i32], tgids: &[i32], comms: &[String], cmd| {
            check_filter_matches(proc, pids, tgids, comms, cmd).map_err(|e| e.to_string())
        };
        assert_eq!(
            check(&[me, tid], &[me], std::slice::from_ref(&comm), false),
            Ok(())
        );
        let e = check(&[me, absent], &[], &[], false).unwrap_err();
        assert!(
            e.starts_with(&format!("--pid {absent} matches no task")),
            "{e}"
        );
        assert!(e.contains("--wait-for-task"), "{e}");
        // A thread that is not a leader is no process.
        if tid != me {
            assert!(check(&[], &[tid], &[], false).is_err());
        }
        let e = check(&[], &[absent], &[], false).unwrap_err();
        assert!(
            e.starts_with(&format!("--tgid {absent} matches no process")),
            "{e}"
        );
        let none = "slnone-nosuch".to_string();
        let e = check(&[], &[], &[comm.clone(), none.clone()], false).unwrap_err();
        assert!(e.starts_with("--comm slnone-nosuch matches no task"), "{e}");
        // CMD may exec that name.
        assert_eq!(check(&[], &[], &[none], true), Ok(()));
    }

    #[cfg(feature = "record")]
    #[test]
    fn default_output_name() {
        let name = default_output().to_string_lossy().into_owned();
        assert!(
            name.starts_with("schedlens-") && name.ends_with("Z.pftrace"),
            "{name}"
        );
    }
}
