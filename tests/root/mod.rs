//! The gate of every test that records: recording loads BPF and needs root.

pub mod latency;

/// True when the test may run. Outside CI and not root it skips loudly; in CI
/// (CI=true) a recorder that cannot load must fail the test, never skip.
pub fn require_bpf() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but not running as root: recording tests must run, not skip");
    }
    eprintln!(
        "\n!!! SKIPPED: recording tests need root (run: sudo -E cargo test --test {}) !!!\n",
        env!("CARGO_CRATE_NAME")
    );
    false
}

/// Runs the calling thread on `cpu` only.
pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity to CPU {cpu}"
        );
    }
}

/// Makes the calling thread SCHED_FIFO at `priority`: only higher RT
/// priorities (and the RT throttle) take its CPU, whatever else the machine
/// runs.
pub fn fifo(priority: i32) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: param is a valid sched_param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    assert_eq!(rc, 0, "sched_setscheduler SCHED_FIFO {priority}");
}

/// CLOCK_BOOTTIME in ns: the trace's clock.
#[allow(dead_code)] // not every test binary that gates on root uses it
pub fn boottime() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) },
        0
    );
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}
