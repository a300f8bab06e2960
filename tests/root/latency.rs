//! A wakeup that waits long for its CPU, for the latency trigger's tests.

#![allow(dead_code)] // not every test binary that gates on root uses it

use std::time::{Duration, Instant};

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

fn set_comm(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// A thread named `sl-victim` pinned to CPU 0 sleeps 100 ms; meanwhile a
/// SCHED_FIFO thread pinned to CPU 0 spins for 600 ms, so the victim's
/// wakeup waits until the spinner yields. Returns the victim's tid.
pub fn delayed_wakeup() -> i32 {
    let (tx, rx) = std::sync::mpsc::channel();
    let victim = std::thread::spawn(move || {
        set_comm("sl-victim");
        pin_to_cpu0();
        tx.send(gettid()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let tid = rx.recv().unwrap();
    let spinner = std::thread::spawn(|| {
        set_comm("sl-spinner");
        pin_to_cpu0();
        let param = libc::sched_param { sched_priority: 50 };
        // SAFETY: param is a valid sched_param.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        assert_eq!(rc, 0, "sched_setscheduler");
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(600) {
            std::hint::spin_loop();
        }
    });
    spinner.join().unwrap();
    victim.join().unwrap();
    tid
}
