//! CPU topology from sysfs: package, core, LLC, NUMA node, capacity, max
//! frequency. Used to shard ring buffers by LLC and written into the trace.
//! (Issue 2; owner: writer.)

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTopo {
    pub cpu: u32,
    pub online: bool,
    pub package_id: i32,
    pub core_id: i32,
    /// CPUs with the same llc_id share a last-level cache.
    pub llc_id: i32,
    pub numa_node: i32,
    pub capacity: Option<u32>,
    pub max_freq_khz: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// One entry per possible CPU, ordered by cpu.
    pub cpus: Vec<CpuTopo>,
}

impl Topology {
    /// Reads this machine's topology from /sys.
    pub fn read() -> anyhow::Result<Topology> {
        Self::read_from(Path::new("/sys"))
    }
    /// Reads a topology from a sysfs tree rooted at `sysfs` (tests use a fake tree).
    pub fn read_from(_sysfs: &Path) -> anyhow::Result<Topology> {
        unimplemented!("issue 2: topology")
    }
    /// CPUs grouped by shared LLC, groups ordered by their lowest CPU.
    pub fn llc_groups(&self) -> Vec<Vec<u32>> {
        unimplemented!("issue 2: topology")
    }
}
