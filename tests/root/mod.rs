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
