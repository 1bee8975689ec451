//! Zeroing and copying in 8-byte words, for the SYN path's buffers.
//!
//! The BPF backend of this toolchain's LLVM lowers a `[0u8; 16]` assignment, or a copy of a
//! 24- or 40-byte array, to a call to `memset`/`memmove`: BPF subprograms that move one byte
//! per five-instruction loop step. On the cookie path those calls cost more than the rest of
//! its own code together (`cargo xtask bench prog`). Buffers in map memory are made 8-byte
//! aligned ([`Words`]) and handled a word at a time instead. Also: reading kernel memory
//! ([`read_kernel`]).

use core::{arch::asm, ffi::c_void};

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

/// `N` bytes, 8-byte aligned so they can be handled as `N / 8` u64 words.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Words<const N: usize>(pub [u8; N]);

impl<const N: usize> Words<N> {
    const WORDS: usize = {
        assert!(N.is_multiple_of(8), "Words<N> holds whole u64 words");
        N / 8
    };

    /// The `i`th 4-byte word, in native byte order (as `u32::from_ne_bytes` would give it):
    /// one aligned load, where assembling it from bytes takes eleven instructions.
    #[inline(always)]
    pub fn u32_at(&self, i: usize) -> u32 {
        const { assert!(N.is_multiple_of(4)) };
        let words = self.0.as_ptr() as *const u32;
        // SAFETY: aligned (the type is 8-byte aligned), and in bounds: the index is clamped,
        // which folds away for the constant indexes it is called with.
        unsafe { words.add(i.min(N / 4 - 1)).read() }
    }

    /// The `i`th 8-byte word, in native byte order: one aligned load.
    #[inline(always)]
    pub fn u64_at(&self, i: usize) -> u64 {
        let words = self.0.as_ptr() as *const u64;
        // SAFETY: aligned (the type is 8-byte aligned), and in bounds: the index is clamped,
        // which folds away for the constant indexes it is called with.
        unsafe { words.add(i.min(Self::WORDS - 1)).read() }
    }

    /// Zeroes every byte, a word at a time.
    #[inline(always)]
    pub fn zero(&mut self) {
        let words = self.0.as_mut_ptr() as *mut u64;
        for i in 0..Self::WORDS {
            // Volatile, or LLVM turns the loop back into a `memset` call.
            // SAFETY: in bounds (i < N / 8) and aligned (the type is 8-byte aligned).
            unsafe { words.add(i).write_volatile(0) };
        }
    }

    /// Copies the first `COUNT` words to `dst`, which need not be aligned.
    ///
    /// # Safety
    /// `dst` has room for `8 * COUNT` bytes; for a packet pointer, the verifier must know it
    /// (a bounds check of at least that size on the same pointer).
    #[inline(always)]
    pub unsafe fn copy_words_to<const COUNT: usize>(&self, dst: *mut u8) {
        const { assert!(COUNT <= N / 8) };
        let words = self.0.as_ptr() as *const u64;
        for i in 0..COUNT {
            // SAFETY: source in bounds and aligned; the destination as the caller promised.
            unsafe { store_u64(dst.add(8 * i), words.add(i).read()) };
        }
    }
}

impl<const N: usize> Words<N> {
    /// Copies the 4-byte word at byte offset `4 * I` to `dst + 4 * I`, which need not be
    /// aligned: the tail of a copy whose length is not a whole number of u64 words.
    ///
    /// # Safety
    /// As for `copy_words_to`, with room for `4 * (I + 1)` bytes at `dst`.
    #[inline(always)]
    pub unsafe fn copy_u32_at_to<const I: usize>(&self, dst: *mut u8) {
        const { assert!(4 * (I + 1) <= N) };
        let word = self.u32_at(I);
        // SAFETY: as the caller promised.
        unsafe {
            asm!(
                "*(u32 *)({dst} + 0) = {value}",
                dst = in(reg) dst.add(4 * I),
                value = in(reg) word,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// One 8-byte store at any alignment.
///
/// Rust's `write_unaligned` becomes eight byte stores and seven shifts here, because the BPF
/// backend assumes strict alignment. The BPF instruction itself takes any address: the
/// verifier only insists on alignment with BPF_F_STRICT_ALIGNMENT or on architectures without
/// efficient unaligned access (check_pkt_ptr_alignment(), kernel/bpf/verifier.c), and the
/// JITs emit a plain store.
///
/// # Safety
/// `dst` is valid for 8 bytes.
#[inline(always)]
unsafe fn store_u64(dst: *mut u8, value: u64) {
    // SAFETY: as the caller promised.
    unsafe {
        asm!(
            "*(u64 *)({dst} + 0) = {value}",
            dst = in(reg) dst,
            value = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}

/// `value`, stored in map memory and read back: what the verifier sees is then a number it
/// knows nothing about but the bounds the caller masks it to. Paths that differ only in such a
/// value (one per VLAN layout and header length, for the packet's offsets) meet again and are
/// verified once, instead of once each down the whole SYN path.
#[inline(always)]
pub fn opaque(cell: &mut u64, value: u64) -> u64 {
    // SAFETY: `cell` is a valid, aligned u64; volatile, so the value really goes through it.
    unsafe {
        core::ptr::write_volatile(cell, value);
        core::ptr::read_volatile(cell)
    }
}

/// One kernel value (a field of a socket, at an address the program holds as a number) of `T`'s size at `addr`, or `None` if the read faults.
#[inline(always)]
pub fn read_kernel<T: Copy + Default>(addr: u64) -> Option<T> {
    let mut value = T::default();
    // SAFETY: writes `size_of::<T>()` bytes into `value`; bpf_probe_read_kernel never faults
    // (copy_from_kernel_nofault(), mm/maccess.c) and reports a bad address as an error.
    let rc = unsafe {
        bpf_probe_read_kernel(
            &mut value as *mut T as *mut c_void,
            size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if rc == 0 { Some(value) } else { None }
}
