//! A wakeup that waits long for its CPU, for the latency trigger's tests.

#![allow(dead_code)] // not every test binary that gates on root uses it

use std::time::{Duration, Instant};

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

fn set_comm(name: &str) {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Whether thread `tid` of this process is asleep (state S in its stat).
fn asleep(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('S'))
        })
        .unwrap_or(false)
}

/// A thread named `sl-victim` pinned to CPU 0 blocks; a SCHED_FIFO thread
/// pinned to CPU 0 then spins, and only once it spins is the victim woken
/// (from another CPU), so its wakeup waits at least 200 ms for the spinner,
/// however loaded the machine is. Returns the victim's tid.
pub fn delayed_wakeup() -> i32 {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::channel;
    static WOKEN: AtomicBool = AtomicBool::new(false);
    WOKEN.store(false, Ordering::SeqCst);
    let (tid_tx, tid_rx) = channel();
    let (wake_tx, wake_rx) = channel::<()>();
    let victim = std::thread::spawn(move || {
        set_comm("sl-victim");
        super::pin(0);
        tid_tx.send(gettid()).unwrap();
        wake_rx.recv().unwrap();
    });
    let tid = tid_rx.recv().unwrap();
    while !asleep(tid) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (spin_tx, spin_rx) = channel();
    let spinner = std::thread::spawn(move || {
        set_comm("sl-spinner");
        super::pin(0);
        super::fifo(50);
        spin_tx.send(()).unwrap();
        // 200 ms past the wakeup; at most 900 ms in all, within the RT
        // throttle's 950 ms a second.
        let start = Instant::now();
        let mut woken_at = None;
        while start.elapsed() < Duration::from_millis(900) {
            if woken_at.is_none() && WOKEN.load(Ordering::SeqCst) {
                woken_at = Some(Instant::now());
            }
            if woken_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(200)) {
                break;
            }
            std::hint::spin_loop();
        }
    });
    spin_rx.recv().unwrap();
    wake_tx.send(()).unwrap();
    WOKEN.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    victim.join().unwrap();
    tid
}
