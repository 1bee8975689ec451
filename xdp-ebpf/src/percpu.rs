//! Reading every CPU's slot of a per-CPU array, for the decisions that sum all CPUs' state
//! (`auto`'s rate, the caps' demand) while each CPU writes only its own.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_map_lookup_percpu_elem, maps::PerCpuArray};

/// CPUs read. XXX: on machines with more, the extra CPUs' slots are left out of the sums.
const MAX_CPUS: u32 = 256;

/// Calls `each` with a pointer to slot `index` of every possible CPU
/// (bpf_map_lookup_percpu_elem, Linux 5.19). The pointee may be being written by its CPU:
/// read it field by field, and expect a torn read now and then.
#[inline(always)]
pub fn for_each_cpu<T>(map: &PerCpuArray<T>, index: u32, mut each: impl FnMut(*const T)) {
    let map = map as *const PerCpuArray<T> as *mut c_void;
    for cpu in 0..MAX_CPUS {
        // SAFETY: `map` is the per-CPU array itself (aya's map types are the bare map
        // definition); the helper returns NULL past the last possible CPU.
        let value =
            unsafe { bpf_map_lookup_percpu_elem(map, &index as *const u32 as *const c_void, cpu) }
                as *const T;
        if value.is_null() {
            break;
        }
        each(value);
    }
}
