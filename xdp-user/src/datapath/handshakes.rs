//! Handshakes per port, from the controller's side (`synguard_common::handshakes`): rows are
//! given to the protected ports that have a listener, as listeners appear, until none is left;
//! a row, once given, keeps its port for as long as the maps live (pinned, they outlive
//! restarts), so a port's counters never move to another label.

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use synguard_common::handshakes::{
    HANDSHAKES_MAP, Handshakes, PORT_ROWS, PORT_ROWS_MAP, ROW_PORTS_MAP, ROWS,
};
use tracing::{info, warn};

use crate::{Error, datapath::maps::take};

/// One label's counters: a port's, or (`port` None) every port without a row of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortHandshakes {
    pub port: Option<u16>,
    /// SYN-ACKs sent from XDP.
    pub answered: u64,
    /// ACKs with a valid cookie.
    pub completed: u64,
}

impl PortHandshakes {
    pub fn label(&self) -> String {
        self.port
            .map_or_else(|| "other".to_string(), |p| p.to_string())
    }
}

pub struct HandshakeMaps {
    rows: Array<MapData, u8>,
    ports: Array<MapData, u16>,
    counts: PerCpuArray<MapData, Handshakes>,
    /// Each row's port; 0 for a row not given out (row 0 is `other`'s).
    given: [u16; ROWS],
    /// Whether running out of rows was logged.
    told_full: bool,
}

impl HandshakeMaps {
    /// Takes the maps out of a loaded object, with the rows a previous controller gave out
    /// (pinned maps taken over).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let rows = take(ebpf, PORT_ROWS_MAP)?;
        let ports: Array<MapData, u16> = take(ebpf, ROW_PORTS_MAP)?;
        let counts = take(ebpf, HANDSHAKES_MAP)?;
        let mut given = [0; ROWS];
        for (row, port) in given.iter_mut().enumerate().skip(1) {
            *port = ports.get(&(row as u32), 0).map_err(|source| Error::Map {
                map: ROW_PORTS_MAP,
                source,
            })?;
        }
        Ok(HandshakeMaps {
            rows,
            ports,
            counts,
            given,
            told_full: false,
        })
    }

    /// Gives a row to each of `ports` that has none, in order, while rows last.
    pub fn give_rows(&mut self, ports: impl IntoIterator<Item = u16>) -> Result<(), Error> {
        for port in ports {
            if port == 0 || self.given.contains(&port) {
                continue;
            }
            let Some(row) = (1..ROWS).find(|&row| self.given[row] == 0) else {
                if !self.told_full {
                    self.told_full = true;
                    warn!(
                        port,
                        "more than {PORT_ROWS} listening ports: handshakes on this one and any \
                         later ones are counted under port=\"other\""
                    );
                }
                continue;
            };
            // The row's port first: a count on the row is always attributable.
            self.ports
                .set(row as u32, port, 0)
                .map_err(|source| Error::Map {
                    map: ROW_PORTS_MAP,
                    source,
                })?;
            self.rows
                .set(u32::from(port), row as u8, 0)
                .map_err(|source| Error::Map {
                    map: PORT_ROWS_MAP,
                    source,
                })?;
            self.given[row] = port;
            info!(port, "counting handshakes on a new listening port");
        }
        Ok(())
    }

    /// The counters summed over all CPUs: `other` first, then each port with a row, by row.
    pub fn read(&self) -> Result<Vec<PortHandshakes>, Error> {
        let per_cpu = self.counts.get(&0, 0).map_err(|source| Error::Map {
            map: HANDSHAKES_MAP,
            source,
        })?;
        let mut total = Handshakes::ZERO;
        for cpu in per_cpu.iter() {
            total.accumulate(cpu);
        }
        Ok((0..ROWS)
            .filter(|&row| row == 0 || self.given[row] != 0)
            .map(|row| PortHandshakes {
                port: (row != 0).then_some(self.given[row]),
                answered: total.answered[row],
                completed: total.completed[row],
            })
            .collect())
    }
}
