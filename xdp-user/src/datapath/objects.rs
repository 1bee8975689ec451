//! The BPF objects, built by `build.rs` and embedded in the binary.

/// The XDP program synguard attaches.
pub static SYNGUARD: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/synguard.bpf.o"));

/// Helper programs for the test lab and benchmarks (`lab_pass`). The `synguard` binary does not
/// use them, so the linker leaves them out of it.
pub static LAB: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab.bpf.o"));

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use object::{Object, ObjectSection, ObjectSymbol};

    /// The names of the maps an object defines: the symbols in its `maps` section.
    fn map_names(object: &[u8]) -> BTreeSet<String> {
        let file = object::File::parse(object).expect("an ELF object");
        file.symbols()
            .filter(|symbol| {
                symbol
                    .section_index()
                    .and_then(|index| file.section_by_index(index).ok())
                    .and_then(|section| section.name().ok().map(|name| name == "maps"))
                    .unwrap_or(false)
            })
            .map(|symbol| symbol.name().expect("a symbol name").to_string())
            .collect()
    }

    #[test]
    fn the_program_defines_exactly_the_maps_synguard_common_names() {
        let expected: BTreeSet<String> = synguard_common::MAP_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(map_names(super::SYNGUARD), expected);
    }

    #[test]
    fn the_benchmark_copy_has_the_products_maps_under_the_same_names() {
        let lab = map_names(super::LAB);
        for name in synguard_common::MAP_NAMES {
            assert!(lab.contains(name), "the lab object lacks {name}: {lab:?}");
        }
    }

    #[test]
    fn every_pinned_map_is_one_of_the_programs() {
        for name in synguard_common::PINNED_MAPS {
            assert!(synguard_common::MAP_NAMES.contains(&name), "{name}");
        }
    }
}
