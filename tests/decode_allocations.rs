//! The workspace is allocated once: after a prefill, decode steps through `Model::forward_into` (the
//! engine's decode step, on the CPU backend) allocate nothing. A counting global allocator sees every heap
//! allocation of the process while the steps run.

mod common;

use attnscope_core::model::{LogitRows, Model};
use attnscope_core::slots::{SlotInfo, Visibility};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only counts allocations while
// `COUNTING` is set.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LAST.store(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes through `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            LAST.store(100_000_000 + new_size, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc`/`dealloc`: `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `steps` decode steps after a prefill of `prompt` tokens. A first pass over the same
/// lengths runs uncounted: it sizes the workspace, and the gemm crate's per-thread packing buffer, which
/// grows when the context passes a length it has not seen (about once per 8 new keys, outside attnscope).
fn decode_allocations(model: &Model, prompt: usize, steps: usize) -> usize {
    let vocab = model.cfg.vocab_size as u32;
    let slots: Vec<SlotInfo> = (0..prompt)
        .map(|i| SlotInfo::prompt(i as u32 % vocab, i as i64, -1))
        .collect();
    let mut logits = Vec::new();
    let mut count = 0;
    for counted in [false, true] {
        let mut cache = model
            .new_cache(prompt + steps, Visibility::Visible)
            .unwrap();
        model
            .forward_into(&mut cache, &slots, None, LogitRows::Last, &mut logits)
            .unwrap();
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(counted, Ordering::SeqCst);
        for i in 0..steps {
            let slot = [SlotInfo::prompt(
                (7 * i) as u32 % vocab,
                (prompt + i) as i64,
                -1,
            )];
            model
                .forward_into(&mut cache, &slot, None, LogitRows::Last, &mut logits)
                .unwrap();
        }
        COUNTING.store(false, Ordering::SeqCst);
        count = ALLOCATIONS.load(Ordering::SeqCst);
    }
    assert_eq!(logits.len(), model.cfg.vocab_size);
    count
}

#[test]
fn cpu_decode_steps_allocate_nothing() {
    // The steps run on a worker of a rayon pool, as the heavy part of any parallel program does: a call
    // from outside the pool would make rayon inject each parallel loop into its global queue, which
    // allocates a block per 63 jobs; that is the scheduler's, not the engine's, and is left out here.
    // One worker: the gemm crate keeps a packing buffer per thread, and with two workers which of them
    // runs a given product (and so which buffer must grow) depends on work stealing, so the uncounted pass
    // could not warm both reliably (the test failed ~1 run in 4 on a loaded machine).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for name in ["llama_gqa", "gpt2", "qwen3", "gpt_neox_parallel", "mistral"] {
        let model = Model::load(&common::cli::fixture(name)).unwrap();
        let n = pool.install(|| decode_allocations(&model, 12, 40));
        let last = LAST.load(Ordering::SeqCst);
        assert_eq!(
            n, 0,
            "{name}: {n} heap allocations in 40 decode steps (the last of {last} bytes)"
        );
    }
}
