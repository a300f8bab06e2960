//! The running kernel's function symbols (/proc/kallsyms), for naming the
//! kernel code addresses some events carry (a work item's function, an IPI's
//! callsite, where a task blocked in D) while they are written, and where
//! the scheduler's text is (the recorder skips it to find the last). Read
//! once before recording and shared by the shards' writer threads,
//! read-only. (The end-of-recording stacks use blazesym, whose symbolizer
//! cannot be shared between threads.)

/// Function symbols by address.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// (start address, end of its name in `names`), by address.
    starts: Vec<(u64, u32)>,
    names: String,
    sched_text: SchedText,
}

/// Where the kernel's scheduler functions are: its `__sched` text and its
/// lock text, each [start, end), which the kernel's get_wchan skips
/// (in_sched_functions) to name the function a task sleeps in. (0, 0) for a
/// section kallsyms does not show.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedText {
    pub sched: (u64, u64),
    pub lock: (u64, u64),
}

impl KernelSymbols {
    /// The running kernel's, from /proc/kallsyms. Without the privilege to
    /// see kernel addresses (kptr_restrict) every address reads as 0: the
    /// table is empty and names nothing.
    pub fn load() -> std::io::Result<KernelSymbols> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/kallsyms")?))
    }

    /// Parses kallsyms text ("ffffffff81000000 T _stext", modules' lines
    /// ending in "\t[module]"); only text symbols (t, T, w, W) are kept.
    pub fn parse(text: &str) -> KernelSymbols {
        let mut sched_text = SchedText::default();
        let mut syms: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                    return None;
                }
                match name {
                    "__sched_text_start" => sched_text.sched.0 = addr,
                    "__sched_text_end" => sched_text.sched.1 = addr,
                    "__lock_text_start" => sched_text.lock.0 = addr,
                    "__lock_text_end" => sched_text.lock.1 = addr,
                    _ => {}
                }
                Some((addr, name))
            })
            .collect();
        // A section without both ends (or reversed ones) is no section.
        for (start, end) in [&mut sched_text.sched, &mut sched_text.lock] {
            if *start == 0 || *end <= *start {
                (*start, *end) = (0, 0);
            }
        }
        // Stable: of aliases at one address, the first listed names it.
        syms.sort_by_key(|&(addr, _)| addr);
        syms.dedup_by_key(|&mut (addr, _)| addr);
        let mut table = KernelSymbols {
            starts: Vec::with_capacity(syms.len()),
            names: String::with_capacity(syms.iter().map(|(_, n)| n.len()).sum()),
            sched_text,
        };
        for (addr, name) in syms {
            table.names.push_str(name);
            table.starts.push((addr, table.names.len() as u32));
        }
        table
    }

    /// Where the scheduler's functions are.
    pub fn sched_text(&self) -> SchedText {
        self.sched_text
    }

    /// Symbols in the table.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The function `addr` is in: the symbol that starts nearest at or below
    /// it (kallsyms has no sizes). None below the first symbol.
    pub fn name(&self, addr: u64) -> Option<&str> {
        let i = self.starts.partition_point(|&(start, _)| start <= addr);
        let end = self.starts.get(i.checked_sub(1)?)?.1 as usize;
        let start = i.checked_sub(2).map_or(0, |j| self.starts[j].1 as usize);
        self.names.get(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_function_an_address_is_in() {
        let t = KernelSymbols::parse(
            "0000000000000000 A fixed_percpu_data\n\
             ffffffff81100010 T flush_to_ldisc\n\
             ffffffff81100000 t __pfx_flush_to_ldisc\n\
             ffffffff81100010 t flush_to_ldisc_alias\n\
             ffffffff81100200 D some_data\n\
             ffffffff81100300 T membarrier_private_expedited\n\
             ffffffffc0001000 t e1000_clean\t[e1000]\n\
             garbage line\n",
        );
        assert_eq!(t.len(), 4);
        assert_eq!(t.name(0xffffffff81100010), Some("flush_to_ldisc"));
        assert_eq!(t.name(0xffffffff81100231), Some("flush_to_ldisc"));
        assert_eq!(t.name(0xffffffff81100008), Some("__pfx_flush_to_ldisc"));
        assert_eq!(
            t.name(0xffffffff81100531),
            Some("membarrier_private_expedited")
        );
        assert_eq!(t.name(0xffffffffc0001004), Some("e1000_clean"));
        assert_eq!(t.name(0xffffffff80000000), None);
        assert_eq!(KernelSymbols::parse("").name(1), None);
        assert_eq!(t.sched_text(), SchedText::default());
    }

    #[test]
    fn finds_the_scheduler_text() {
        let t = KernelSymbols::parse(
            "ffffffff82265240 T __sched_text_start\n\
             ffffffff82265240 T __schedule\n\
             ffffffff8226df62 T __sched_text_end\n\
             ffffffff8226df70 T __lock_text_start\n\
             ffffffff8226f9f1 T __lock_text_end\n",
        );
        assert_eq!(
            t.sched_text(),
            SchedText {
                sched: (0xffffffff82265240, 0xffffffff8226df62),
                lock: (0xffffffff8226df70, 0xffffffff8226f9f1),
            }
        );
        // An end without its start, or kptr_restrict's zeros: not known.
        let t = KernelSymbols::parse(
            "ffffffff8226df62 T __sched_text_end\n\
             0000000000000000 T __lock_text_start\n\
             0000000000000000 T __lock_text_end\n",
        );
        assert_eq!(t.sched_text(), SchedText::default());
    }
}
