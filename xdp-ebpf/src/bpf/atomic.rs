//! Atomic read-modify-write on map values, for the state every CPU shares.
//!
//! Rust's atomics cannot do it here: the BPF target is declared single-threaded
//! (`singlethread: true`, `atomic-cas: false` in its spec), so LLVM lowers them to plain loads
//! and stores. The instructions themselves exist (BPF_ATOMIC with BPF_FETCH, BPF_CMPXCHG; Linux
//! 5.12, Documentation/bpf/standardization/instruction-set.rst, "Atomic operations") and the
//! verifier allows them on map values (kernel/bpf/verifier.c, check_atomic), so they are
//! written as inline assembly. Both are full barriers, like the kernel's own atomics.

use core::arch::asm;

/// Adds `value` to `*cell` and returns what it held before.
///
/// # Safety
/// `cell` points at an 8-byte aligned u64 in a map value.
#[inline(always)]
pub unsafe fn fetch_add(cell: *mut u64, value: u64) -> u64 {
    let mut value = value;
    // SAFETY: as the caller promised.
    unsafe {
        asm!(
            "{value} = atomic_fetch_add((u64 *)({cell} + 0), {value})",
            cell = in(reg) cell,
            value = inout(reg) value,
        );
    }
    value
}

/// Sets the bits of `value` in `*cell`.
///
/// # Safety
/// `cell` points at an 8-byte aligned u64 in a map value.
#[inline(always)]
pub unsafe fn or(cell: *mut u64, value: u64) {
    // SAFETY: as the caller promised. The fetching form, as `fetch_add`; the old value is
    // dropped.
    unsafe {
        asm!(
            "{value} = atomic_fetch_or((u64 *)({cell} + 0), {value})",
            cell = in(reg) cell,
            value = inout(reg) value => _,
        );
    }
}

/// Stores `new` in `*cell` if it holds `expected`; returns what it held, so the swap happened
/// if and only if the result equals `expected`.
///
/// # Safety
/// `cell` points at an 8-byte aligned u64 in a map value.
#[inline(always)]
pub unsafe fn compare_exchange(cell: *mut u64, expected: u64, new: u64) -> u64 {
    let found: u64;
    // SAFETY: as the caller promised. BPF_CMPXCHG compares with and returns into r0.
    unsafe {
        asm!(
            "r0 = cmpxchg_64({cell} + 0, r0, {new})",
            cell = in(reg) cell,
            new = in(reg) new,
            inout("r0") expected => found,
        );
    }
    found
}

/// Reads `*cell` once, as a single 8-byte load.
///
/// # Safety
/// `cell` points at an 8-byte aligned u64 in a map value.
#[inline(always)]
pub unsafe fn load(cell: *const u64) -> u64 {
    // SAFETY: as the caller promised; an aligned 8-byte load is never torn.
    unsafe { core::ptr::read_volatile(cell) }
}
