//! CPU topology from sysfs: package, core, LLC, NUMA node, capacity, max
//! frequency. Used to shard ring buffers by LLC and written into the trace.
//!
//! Offline CPUs have no topology or cache directories, containers hide parts
//! of /sys, and some architectures lack cpu_capacity or cpufreq: every
//! missing piece degrades to a neutral value instead of failing.

use std::collections::BTreeMap;
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
    /// The cpufreq driver (the first CPU's with one, `cpufreq/scaling_driver`);
    /// None without one: no CPU changes frequency through cpufreq.
    pub cpufreq_driver: Option<String>,
}

/// Bounds what a corrupt cpulist can make us allocate.
const MAX_CPUS: u32 = crate::model::MAX_CPUS as u32;

/// Parses a kernel cpulist ("0-3,8,10-14:2"); malformed parts are skipped.
pub fn parse_cpulist(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (range, stride) = match part.split_once(':') {
            Some((r, s)) => (r, s.parse::<u32>().unwrap_or(1).max(1)),
            None => (part, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
            None => (range.parse::<u32>(), range.parse::<u32>()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else { continue };
        let hi = hi.min(MAX_CPUS - 1);
        out.extend((lo..=hi).step_by(stride as usize));
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn read_str(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read_str(path)?.parse().ok()
}

/// How a CPU's LLC group is known, from best to worst evidence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LlcKey {
    Cache(Vec<u32>),
    Package(i32),
    Alone(u32),
}

/// The CPUs sharing `cpu`'s highest-level data or unified cache.
fn llc_cpus(cpu_dir: &Path, cpu: u32) -> Option<Vec<u32>> {
    let mut best: Option<(u32, Vec<u32>)> = None;
    for entry in std::fs::read_dir(cpu_dir.join("cache")).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("index") {
            continue;
        }
        let dir = entry.path();
        let Some(level) = read_num::<u32>(&dir.join("level")) else {
            continue;
        };
        let kind = read_str(&dir.join("type")).unwrap_or_default();
        if kind != "Unified" && kind != "Data" {
            continue;
        }
        let Some(list) = read_str(&dir.join("shared_cpu_list")) else {
            continue;
        };
        let mut cpus = parse_cpulist(&list);
        if let Err(at) = cpus.binary_search(&cpu) {
            cpus.insert(at, cpu);
        }
        if best.as_ref().is_none_or(|(l, _)| level > *l) {
            best = Some((level, cpus));
        }
    }
    best.map(|(_, cpus)| cpus)
}

fn numa_node(cpu_dir: &Path, cpu: u32, node_lists: &[(i32, Vec<u32>)]) -> i32 {
    if let Ok(rd) = std::fs::read_dir(cpu_dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_prefix("node")) {
                if let Ok(n) = n.parse() {
                    return n;
                }
            }
        }
    }
    node_lists
        .iter()
        .find(|(_, cpus)| cpus.binary_search(&cpu).is_ok())
        .map_or(0, |(n, _)| *n)
}

fn node_cpulists(sysfs: &Path) -> Vec<(i32, Vec<u32>)> {
    let Ok(rd) = std::fs::read_dir(sysfs.join("devices/system/node")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let n: i32 = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            Some((n, parse_cpulist(&read_str(&e.path().join("cpulist"))?)))
        })
        .collect()
}

impl Topology {
    /// Reads this machine's topology from /sys.
    pub fn read() -> anyhow::Result<Topology> {
        Self::read_from(Path::new("/sys"))
    }

    /// Reads a topology from a sysfs tree rooted at `sysfs` (tests use a fake tree).
    pub fn read_from(sysfs: &Path) -> anyhow::Result<Topology> {
        let cpu_root = sysfs.join("devices/system/cpu");
        let mut possible = read_str(&cpu_root.join("possible"))
            .map(|s| parse_cpulist(&s))
            .unwrap_or_default();
        if possible.is_empty() {
            // No cpulist: take the cpuN directories there are.
            possible = std::fs::read_dir(&cpu_root)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
                        .filter(|&c: &u32| c < MAX_CPUS)
                        .collect()
                })
                .unwrap_or_default();
            possible.sort_unstable();
        }
        anyhow::ensure!(
            !possible.is_empty(),
            "no CPUs found under {}",
            cpu_root.display()
        );
        let online = read_str(&cpu_root.join("online")).map(|s| parse_cpulist(&s));
        let node_lists = node_cpulists(sysfs);

        let mut keys = Vec::with_capacity(possible.len());
        let mut cpus = Vec::with_capacity(possible.len());
        for &cpu in &possible {
            let dir = cpu_root.join(format!("cpu{cpu}"));
            let is_online = match &online {
                Some(list) => list.binary_search(&cpu).is_ok(),
                // cpu0 often has no `online` file: it cannot go offline.
                None => read_num::<u32>(&dir.join("online")).is_none_or(|v| v == 1),
            };
            let package_id = read_num(&dir.join("topology/physical_package_id")).unwrap_or(-1);
            let core_id = read_num(&dir.join("topology/core_id")).unwrap_or(-1);
            let key = match llc_cpus(&dir, cpu) {
                Some(list) => LlcKey::Cache(list),
                None if package_id >= 0 => LlcKey::Package(package_id),
                None => LlcKey::Alone(cpu),
            };
            keys.push(key);
            cpus.push(CpuTopo {
                cpu,
                online: is_online,
                package_id,
                core_id,
                llc_id: 0,
                numa_node: numa_node(&dir, cpu, &node_lists),
                capacity: read_num(&dir.join("cpu_capacity")),
                max_freq_khz: read_num(&dir.join("cpufreq/cpuinfo_max_freq")),
            });
        }
        // llc ids follow the groups' lowest CPU; cpus are in order, so the
        // first CPU seen of each group is its lowest.
        let mut ids: BTreeMap<&LlcKey, i32> = BTreeMap::new();
        for (c, key) in cpus.iter_mut().zip(&keys) {
            let next = ids.len() as i32;
            c.llc_id = *ids.entry(key).or_insert(next);
        }
        let cpufreq_driver = possible.iter().find_map(|cpu| {
            read_str(&cpu_root.join(format!("cpu{cpu}/cpufreq/scaling_driver")))
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
        });
        Ok(Topology {
            cpus,
            cpufreq_driver,
        })
    }

    /// CPUs grouped by shared LLC, groups ordered by their lowest CPU.
    pub fn llc_groups(&self) -> Vec<Vec<u32>> {
        let mut groups: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
        for c in &self.cpus {
            groups.entry(c.llc_id).or_default().push(c.cpu);
        }
        let mut out: Vec<Vec<u32>> = groups.into_values().collect();
        for g in &mut out {
            g.sort_unstable();
        }
        out.sort_by_key(|g| g.first().copied());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// 8 possible CPUs: two packages/nodes, each with one L3 over 3 CPUs;
    /// cpu3 and cpu7 are offline (no topology, no cache directories).
    fn fake_tree(root: &Path, node_links: bool) {
        write(root, "devices/system/cpu/possible", "0-7\n");
        write(root, "devices/system/cpu/online", "0-2,4-6\n");
        for cpu in [0u32, 1, 2, 4, 5, 6] {
            let pkg = cpu / 4;
            let d = format!("devices/system/cpu/cpu{cpu}");
            write(
                root,
                &format!("{d}/topology/physical_package_id"),
                &format!("{pkg}\n"),
            );
            write(
                root,
                &format!("{d}/topology/core_id"),
                &format!("{}\n", cpu % 4),
            );
            let l3 = if pkg == 0 { "0-2" } else { "4-6" };
            for (i, (level, kind, shared)) in [
                (1, "Data", cpu.to_string()),
                (1, "Instruction", cpu.to_string()),
                (2, "Unified", cpu.to_string()),
                (3, "Unified", l3.to_string()),
            ]
            .iter()
            .enumerate()
            {
                let c = format!("{d}/cache/index{i}");
                write(root, &format!("{c}/level"), &format!("{level}\n"));
                write(root, &format!("{c}/type"), &format!("{kind}\n"));
                write(
                    root,
                    &format!("{c}/shared_cpu_list"),
                    &format!("{shared}\n"),
                );
            }
            write(
                root,
                &format!("{d}/cpu_capacity"),
                if pkg == 0 { "1024\n" } else { "512\n" },
            );
            write(root, &format!("{d}/cpufreq/cpuinfo_max_freq"), "3000000\n");
            if node_links {
                fs::create_dir_all(root.join(format!("{d}/node{pkg}"))).unwrap();
            }
        }
        fs::create_dir_all(root.join("devices/system/cpu/cpu3")).unwrap();
        fs::create_dir_all(root.join("devices/system/cpu/cpu7")).unwrap();
        write(root, "devices/system/node/node0/cpulist", "0-3\n");
        write(root, "devices/system/node/node1/cpulist", "4-7\n");
    }

    #[test]
    fn two_llcs_two_nodes() {
        for node_links in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            fake_tree(dir.path(), node_links);
            let t = Topology::read_from(dir.path()).unwrap();
            assert_eq!(t.cpus.len(), 8);
            let c5 = &t.cpus[5];
            assert_eq!(
                c5,
                &CpuTopo {
                    cpu: 5,
                    online: true,
                    package_id: 1,
                    core_id: 1,
                    llc_id: 2,
                    numa_node: 1,
                    capacity: Some(512),
                    max_freq_khz: Some(3_000_000),
                }
            );
            let c3 = &t.cpus[3];
            assert!(!c3.online);
            assert_eq!(
                (c3.package_id, c3.core_id, c3.numa_node, c3.capacity),
                (-1, -1, 0, None)
            );
            assert_eq!(t.cpus[7].numa_node, 1);
            // Offline CPUs with nothing known get a group of their own.
            assert_eq!(
                t.llc_groups(),
                vec![vec![0, 1, 2], vec![3], vec![4, 5, 6], vec![7]]
            );
            let ids: Vec<i32> = t.cpus.iter().map(|c| c.llc_id).collect();
            assert_eq!(ids, vec![0, 0, 0, 1, 2, 2, 2, 3]);
        }
    }

    #[test]
    fn partial_trees_degrade() {
        let dir = tempfile::tempdir().unwrap();
        // Only the cpu directories: no lists, no topology, no caches.
        for cpu in 0..4 {
            fs::create_dir_all(dir.path().join(format!("devices/system/cpu/cpu{cpu}"))).unwrap();
        }
        write(
            dir.path(),
            "devices/system/cpu/cpu2/topology/physical_package_id",
            "0",
        );
        write(
            dir.path(),
            "devices/system/cpu/cpu3/topology/physical_package_id",
            "0",
        );
        write(dir.path(), "devices/system/cpu/cpu1/online", "0");
        let t = Topology::read_from(dir.path()).unwrap();
        assert_eq!(t.cpus.len(), 4);
        assert!(t.cpus[0].online && !t.cpus[1].online);
        assert_eq!(t.llc_groups(), vec![vec![0], vec![1], vec![2, 3]]);
        let empty = tempfile::tempdir().unwrap();
        assert!(Topology::read_from(empty.path()).is_err());
    }

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-3,8,10-14:2\n"),
            vec![0, 1, 2, 3, 8, 10, 12, 14]
        );
        assert_eq!(parse_cpulist(""), Vec::<u32>::new());
        assert_eq!(parse_cpulist("x,3,2-1,5"), vec![3, 5]);
        assert_eq!(parse_cpulist("0-4294967295").len(), MAX_CPUS as usize);
    }

    #[test]
    fn this_machine() {
        let t = Topology::read().unwrap();
        assert!(!t.cpus.is_empty());
        assert!(t.cpus.iter().any(|c| c.online));
        let groups = t.llc_groups();
        let mut all: Vec<u32> = groups.concat();
        all.sort_unstable();
        let cpus: Vec<u32> = t.cpus.iter().map(|c| c.cpu).collect();
        assert_eq!(all, cpus, "the groups partition the CPUs");
    }
}
