//! The dump maps of an attached program (`synguard_common::dump`), opened by a process of its
//! own (`synguard dump`) through the program's id, as bpftool does: no pins needed, so it works
//! with `--no-pin` too. The kernel gives map names 15 characters (BPF_OBJ_NAME_LEN).

use aya::{
    maps::{Array, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::loaded_programs,
};
use synguard_common::dump::{DUMP_BUDGET_MAP, DUMP_CONFIG_MAP, DUMP_RING_MAP, DumpConfig};

use crate::Error;

pub struct DumpMaps {
    config: Array<MapData, DumpConfig>,
    budget: PerCpuArray<MapData, u64>,
    pub ring: RingBuf<MapData>,
}

/// A map's name as the kernel keeps it.
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

impl DumpMaps {
    /// The dump maps of the loaded program `program_id`.
    pub fn of_program(program_id: u32) -> Result<DumpMaps, Error> {
        let fail = |what: String| Error::Other(format!("opening the dump maps failed: {what}"));
        let program = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == program_id)
            .ok_or_else(|| fail(format!("no loaded program has id {program_id}")))?;
        let ids = program
            .map_ids()
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail("the kernel does not list the program's maps".into()))?;
        let mut found: [Option<MapData>; 3] = [None, None, None];
        for id in ids {
            let Ok(map) = MapData::from_id(id) else {
                continue;
            };
            let Ok(info) = map.info() else {
                continue;
            };
            let name = info.name_as_str().unwrap_or_default().to_string();
            for (slot, wanted) in [DUMP_CONFIG_MAP, DUMP_BUDGET_MAP, DUMP_RING_MAP]
                .into_iter()
                .enumerate()
            {
                if name == kernel_name(wanted) {
                    found[slot] = Some(map);
                    break;
                }
            }
        }
        let [Some(config), Some(budget), Some(ring)] = found else {
            return Err(fail(format!(
                "program {program_id} has no dump maps: is it synguard's, of this version?"
            )));
        };
        let map_error = |map, source| Error::Map { map, source };
        Ok(DumpMaps {
            config: Array::try_from(Map::Array(config))
                .map_err(|e| map_error(DUMP_CONFIG_MAP, e))?,
            budget: PerCpuArray::try_from(Map::PerCpuArray(budget))
                .map_err(|e| map_error(DUMP_BUDGET_MAP, e))?,
            ring: RingBuf::try_from(Map::RingBuf(ring)).map_err(|e| map_error(DUMP_RING_MAP, e))?,
        })
    }

    pub fn config(&self) -> Result<DumpConfig, Error> {
        self.config.get(&0, 0).map_err(|source| Error::Map {
            map: DUMP_CONFIG_MAP,
            source,
        })
    }

    pub fn set_config(&mut self, config: &DumpConfig) -> Result<(), Error> {
        self.config.set(0, *config, 0).map_err(|source| Error::Map {
            map: DUMP_CONFIG_MAP,
            source,
        })
    }

    /// Gives every CPU `records` more records to write until the next refill (not added to
    /// what is left: a budget never piles up).
    pub fn refill(&mut self, records: u64) -> Result<(), Error> {
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| Error::Other(format!("{what}: {e}")))?;
        let values =
            PerCpuValues::try_from(vec![records; cpus]).map_err(|e| Error::Other(e.to_string()))?;
        self.budget.set(0, values, 0).map_err(|source| Error::Map {
            map: DUMP_BUDGET_MAP,
            source,
        })
    }
}

/// Whether the process `pid` (a dump's owner) still exists: signal 0 reaches it, or it exists
/// but is not ours to signal.
pub fn process_alive(pid: u32) -> bool {
    pid != 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
}
