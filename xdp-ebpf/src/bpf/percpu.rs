//! Reading every CPU's slot of a per-CPU array, for the decisions that sum all CPUs' state
//! (`auto`'s rate, the caps' demand) while each CPU writes only its own.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_map_lookup_percpu_elem},
    maps::PerCpuArray,
};

/// CPUs read. XXX: on machines with more, the extra CPUs' slots are left out of the sums.
const MAX_CPUS: u32 = 256;

/// What `bpf_loop` hands `step`: the map, the slot, and the caller's closure.
#[repr(C)]
struct WalkCtx<F> {
    map: *mut c_void,
    index: u32,
    each: *mut F,
}

/// Calls `each` with a pointer to slot `index` of every possible CPU
/// (bpf_map_lookup_percpu_elem, Linux 5.19). The pointee may be being written by its CPU:
/// read it field by field, and expect a torn read now and then. Returns how many CPUs there
/// are: counted by bpf_loop itself, as a counter in the closure would be a constant the
/// verifier tracks exactly and never sees two iterations alike.
///
/// Why bpf_loop rather than a plain loop: the verifier unrolls a bounded loop, so each SYN path
/// that reached one of these walks cost it 256 iterations' worth of instructions, and with the
/// SYN path's many ways through, that crossed its one-million-instruction budget. A bpf_loop
/// callback is checked until its state stops changing, about twice (kernel/bpf/verifier.c,
/// `check_helper_call()` for BPF_FUNC_loop). At run time it costs an indirect call per CPU, in
/// a walk that runs once per 10 ms window.
#[inline(always)]
pub fn for_each_cpu<T, F: FnMut(*const T)>(map: &PerCpuArray<T>, index: u32, mut each: F) -> u64 {
    let mut ctx = WalkCtx {
        map: map as *const PerCpuArray<T> as *mut c_void,
        index,
        each: &mut each as *mut F,
    };
    // SAFETY: `step::<T, F>` is a BPF subprogram with the callback signature bpf_loop expects,
    // and `ctx` (with the closure it points to) lives on this stack frame for the whole call.
    let loops = unsafe {
        bpf_loop(
            MAX_CPUS,
            step::<T, F> as *mut c_void,
            &mut ctx as *mut WalkCtx<F> as *mut c_void,
            0,
        )
    };
    // bpf_loop() (kernel/bpf/bpf_iter.c) counts the step that found no CPU and stopped.
    match loops {
        n if n <= 0 => 0,
        n if n as u32 >= MAX_CPUS => u64::from(MAX_CPUS),
        n => n as u64 - 1,
    }
}

/// One CPU per call; returns 1 to stop the loop (bpf_loop's contract) past the last CPU.
#[inline(never)]
extern "C" fn step<T, F: FnMut(*const T)>(cpu: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkCtx<F>` passed to bpf_loop by `for_each_cpu`.
    let ctx = unsafe { &mut *(ctx as *mut WalkCtx<F>) };
    // SAFETY: `map` is the per-CPU array itself (aya's map types are the bare map
    // definition); the helper returns NULL past the last possible CPU.
    let value = unsafe {
        bpf_map_lookup_percpu_elem(
            ctx.map,
            &ctx.index as *const u32 as *const c_void,
            cpu as u32,
        )
    } as *const T;
    if value.is_null() {
        return 1;
    }
    // SAFETY: the closure lives in `for_each_cpu`'s frame for the whole loop.
    unsafe { (*ctx.each)(value) };
    0
}
