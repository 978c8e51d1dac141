//! The recorder's raw histogram samples are drained without any scrape:
//! a process nobody scrapes must not grow with every event it applies.
//! (Its own test binary: it counts the heap with its own allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

use redmirror_telemetry::metrics as m;

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is only bookkeeping.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: isize = 1 << 20;

#[test]
fn histogram_samples_are_drained_without_a_scrape() {
    let _handle = m::install();
    let before = LIVE.load(Relaxed);
    let h = metrics::histogram!(m::END_TO_END);
    for i in 0..1_000_000u32 {
        h.record(f64::from(i % 1000) / 1e4);
    }
    let held = LIVE.load(Relaxed) - before;
    assert!(
        held > 4 * MIB,
        "a million samples should be held until upkeep: {held} bytes"
    );

    redmirror_testkit::wait_for("the samples to be drained by upkeep", Duration::from_secs(20), || {
        // Records a sample now and then, as a live process does (the
        // recorder frees drained blocks once its readers move on).
        h.record(0.001);
        (LIVE.load(Relaxed) - before < MIB).then_some(())
    });
}
