//! The running kernel's function symbols (/proc/kallsyms), for naming the
//! kernel code addresses some events carry (a work item's function, an IPI's
//! callsite) while they are written. Read once before recording and shared
//! by the shards' writer threads, read-only. (The end-of-recording stacks
//! use blazesym, whose symbolizer cannot be shared between threads.)

/// Function symbols by address.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// (start address, end of its name in `names`), by address.
    starts: Vec<(u64, u32)>,
    names: String,
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
        let mut syms: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then_some((addr, name))
            })
            .collect();
        // Stable: of aliases at one address, the first listed names it.
        syms.sort_by_key(|&(addr, _)| addr);
        syms.dedup_by_key(|&mut (addr, _)| addr);
        let mut table = KernelSymbols {
            starts: Vec::with_capacity(syms.len()),
            names: String::with_capacity(syms.iter().map(|(_, n)| n.len()).sum()),
        };
        for (addr, name) in syms {
            table.names.push_str(name);
            table.starts.push((addr, table.names.len() as u32));
        }
        table
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
    }
}
