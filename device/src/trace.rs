//! Memory-access recording of team algorithms, for a CPU model of their GPU memory traffic
//! (feature `access-trace`, host only; nothing of it reaches the PTX or production builds).
//!
//! With the feature, every [`Shared`](crate::team::Shared) access reports its address and
//! its source location (`#[track_caller]`) to [`record`]; a [`TraceTeam`] runs the phases
//! like [`SerialTeam`](crate::team::SerialTeam) and tags each access with its phase and lane.
//! [`model`] then groups the accesses the way a warp issues them — the same source location
//! (one instruction) in the same occurrence per lane (the same loop iteration, as lanes of a
//! warp run in lockstep), in the same phase, by the lanes of one warp of 32 — and counts:
//! - shared memory: *wavefronts* per warp access, 32 banks of 4 bytes: the most distinct
//!   4-byte words that fall in one bank (a word read by several lanes is one broadcast);
//!   an 8-byte access touches two words, so a warp's full f64 access needs at least 2;
//! - global memory: distinct 32-byte *sectors* per warp access.
//!
//! Which buffers are shared memory is the caller's statement ([`Region`]): on the GPU the
//! team routines take `Shared` views of both kinds.

extern crate std;

use core::cell::RefCell;
use core::panic::Location;
use core::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashMap;
use std::vec::Vec;

use crate::team::Team;

/// One recorded access.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    /// Phase (barrier interval) of the [`TraceTeam`], from 0.
    pub phase: u32,
    /// Lane.
    pub lane: u32,
    /// Source location of the access (the instruction).
    pub site: &'static Location<'static>,
    /// Byte address.
    pub addr: usize,
    /// Bytes (8, or 16 for a pair load).
    pub bytes: u8,
    /// Store (else load).
    pub write: bool,
}

struct Recorder {
    phase: u32,
    lane: u32,
    log: Vec<Access>,
}

/// Fast path: no thread records (one relaxed load per access when the feature is on).
static ACTIVE: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Records one access of `bytes` bytes at `addr` (called by `Shared`; a no-op unless this
/// thread is inside [`trace`]).
#[inline(always)]
pub fn record(addr: *const f64, bytes: u8, write: bool, site: &'static Location<'static>) {
    if !ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    RECORDER.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            let (phase, lane) = (rec.phase, rec.lane);
            rec.log.push(Access {
                phase,
                lane,
                site,
                addr: addr as usize,
                bytes,
                write,
            });
        }
    });
}

/// Runs `f` with recording on for this thread and returns its result and the accesses.
pub fn trace<R>(f: impl FnOnce() -> R) -> (R, Vec<Access>) {
    RECORDER.with(|r| {
        *r.borrow_mut() = Some(Recorder {
            phase: 0,
            lane: 0,
            log: Vec::new(),
        })
    });
    ACTIVE.store(true, Ordering::Relaxed);
    let out = f();
    let log = RECORDER.with(|r| r.borrow_mut().take().map(|rec| rec.log).unwrap_or_default());
    (out, log)
}

/// [`SerialTeam`](crate::team::SerialTeam) that tags the recorded accesses with phase and
/// lane.
#[derive(Clone, Copy, Debug)]
pub struct TraceTeam {
    /// Number of lanes emulated.
    pub lanes: usize,
}

impl Team for TraceTeam {
    fn lanes(&self) -> usize {
        self.lanes
    }

    fn each<F: FnMut(usize)>(&self, mut f: F) {
        for lane in 0..self.lanes {
            RECORDER.with(|r| {
                if let Some(rec) = r.borrow_mut().as_mut() {
                    rec.lane = lane as u32;
                }
            });
            f(lane);
        }
        RECORDER.with(|r| {
            if let Some(rec) = r.borrow_mut().as_mut() {
                rec.phase += 1;
            }
        });
    }
}

/// A buffer of the traced run: its address range and its memory space.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// Name in the report.
    pub name: &'static str,
    /// First byte.
    pub start: usize,
    /// Length in bytes.
    pub bytes: usize,
    /// Shared memory (else global).
    pub shared: bool,
    /// Shared memory: the byte address taken as offset 0 of the shared space (128-byte
    /// aligned, as the dynamic shared memory of a block is); global: sectors are counted from
    /// the real addresses.
    pub base: usize,
}

impl Region {
    /// The region of a slice.
    pub fn of(name: &'static str, slice: &[f64], shared: bool) -> Self {
        Self {
            name,
            start: slice.as_ptr() as usize,
            bytes: core::mem::size_of_val(slice),
            shared,
            base: slice.as_ptr() as usize,
        }
    }

    /// The region of `whole[range]`, a part of a shared buffer that starts at `whole[0]`.
    pub fn part(name: &'static str, whole: &[f64], range: core::ops::Range<usize>) -> Self {
        let part = &whole[range];
        Self {
            name,
            start: part.as_ptr() as usize,
            bytes: core::mem::size_of_val(part),
            shared: true,
            base: whole.as_ptr() as usize,
        }
    }

    fn contains(&self, addr: usize) -> bool {
        addr >= self.start && addr < self.start + self.bytes
    }
}

/// Totals of one region (or of all) in the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Warp load instructions.
    pub loads: u64,
    /// Warp store instructions.
    pub stores: u64,
    /// Shared memory: load wavefronts; global: load sectors.
    pub load_units: u64,
    /// Shared memory: store wavefronts; global: store sectors.
    pub store_units: u64,
    /// Lane accesses (8 bytes each).
    pub lane_accesses: u64,
    /// The fewest units the same warp accesses could take: per warp access, the distinct
    /// addresses packed densely (`ceil(distinct bytes / 128)` wavefronts, `ceil(distinct
    /// bytes / 32)` sectors). `units / ideal_units` is the conflict (shared) or scatter (global) factor.
    pub ideal_units: u64,
}

impl Traffic {
    /// Load and store units together.
    pub fn units(&self) -> u64 {
        self.load_units + self.store_units
    }

    /// Load and store instructions together.
    pub fn instructions(&self) -> u64 {
        self.loads + self.stores
    }

    /// Adds `o` to these totals.
    pub fn add(&mut self, o: &Traffic) {
        self.loads += o.loads;
        self.stores += o.stores;
        self.load_units += o.load_units;
        self.store_units += o.store_units;
        self.lane_accesses += o.lane_accesses;
        self.ideal_units += o.ideal_units;
    }
}

/// Result of [`model`]: per region (in the order given), plus the phases (barriers).
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// `(region name, shared, traffic)`.
    pub regions: Vec<(&'static str, bool, Traffic)>,
    /// Accesses outside every region (a logic error of the caller).
    pub unmatched: u64,
    /// Phases run.
    pub phases: u32,
    /// Sum over the phases of the most accesses one lane makes in the phase: a proxy for the
    /// length of the phases' critical paths (a phase ends at its barrier, when its busiest
    /// lane is done).
    pub critical_accesses: u64,
    /// Sum over the phases of the most warp accesses one warp issues in the phase (the lanes
    /// of a warp that take different branches issue one after the other: SIMT divergence).
    pub critical_warp_accesses: u64,
    /// Per source location (`file:line:column`) and region: the traffic, in no order.
    pub sites: Vec<(&'static str, u32, u32, &'static str, Traffic)>,
}

impl Model {
    /// Totals over the shared (`true`) or global (`false`) regions.
    pub fn total(&self, shared: bool) -> Traffic {
        let mut t = Traffic::default();
        for (_, s, r) in &self.regions {
            if *s == shared {
                t.add(r);
            }
        }
        t
    }
}

/// Shared-memory wavefronts of one warp access to the byte addresses `addrs` (8 bytes each,
/// relative to a 128-byte aligned base): the most distinct 4-byte words in one of 32 banks.
pub fn shared_wavefronts(addrs: &[usize]) -> u64 {
    shared_wavefronts_sized(addrs, 8)
}

/// [`shared_wavefronts`] for accesses of `bytes` bytes each (8 or 16).
pub fn shared_wavefronts_sized(addrs: &[usize], bytes: usize) -> u64 {
    let mut words: Vec<usize> = Vec::with_capacity(bytes / 4 * addrs.len());
    for &a in addrs {
        for w in 0..bytes / 4 {
            words.push(a / 4 + w);
        }
    }
    words.sort_unstable();
    words.dedup();
    let mut per_bank = [0u64; 32];
    for w in words {
        per_bank[w % 32] += 1;
    }
    per_bank.into_iter().max().unwrap_or(0)
}

/// Global-memory sectors of one warp access: distinct 32-byte sectors of the 8-byte accesses.
pub fn global_sectors(addrs: &[usize]) -> u64 {
    global_sectors_sized(addrs, 8)
}

/// [`global_sectors`] for accesses of `bytes` bytes each (8 or 16, aligned).
pub fn global_sectors_sized(addrs: &[usize], bytes: usize) -> u64 {
    let _ = bytes; // an aligned access of at most 32 bytes lies in one sector
    let mut s: Vec<usize> = addrs.iter().map(|a| a / 32).collect();
    s.sort_unstable();
    s.dedup();
    s.len() as u64
}

/// Groups the accesses of `log` into warp accesses (phase, warp, site, occurrence, kind) and
/// counts them per region (see the module documentation).
pub fn model(log: &[Access], regions: &[Region]) -> Model {
    type Key = (u32, u32, &'static str, u32, u32, u32, bool, u8);
    let mut occurrence: HashMap<(u32, u32, &'static str, u32, u32, bool), u32> = HashMap::new();
    let mut groups: HashMap<Key, (usize, Vec<usize>)> = HashMap::new();
    let mut unmatched = 0;
    let mut phases = 0;
    let mut per_lane: HashMap<(u32, u32), u64> = HashMap::new();
    for a in log {
        *per_lane.entry((a.phase, a.lane)).or_insert(0) += 1;
        phases = phases.max(a.phase + 1);
        let Some(r) = regions.iter().position(|r| r.contains(a.addr)) else {
            unmatched += 1;
            continue;
        };
        let site = (a.site.file(), a.site.line(), a.site.column());
        let occ = occurrence
            .entry((a.phase, a.lane, site.0, site.1, site.2, a.write))
            .or_insert(0);
        let key = (
            a.phase,
            a.lane / 32,
            site.0,
            site.1,
            site.2,
            *occ,
            a.write,
            a.bytes,
        );
        *occ += 1;
        let entry = groups.entry(key).or_insert((r, Vec::new()));
        let base = if regions[r].shared {
            regions[r].base
        } else {
            0
        };
        entry.1.push(a.addr - base);
    }
    let mut per_warp: HashMap<(u32, u32), u64> = HashMap::new();
    for key in groups.keys() {
        *per_warp.entry((key.0, key.1)).or_insert(0) += 1;
    }
    let mut busiest_warp: HashMap<u32, u64> = HashMap::new();
    for ((phase, _), count) in per_warp {
        let b = busiest_warp.entry(phase).or_insert(0);
        *b = (*b).max(count);
    }
    let mut out: Vec<Traffic> = alloc_traffic(regions.len());
    let mut sites: HashMap<(&'static str, u32, u32, usize), Traffic> = HashMap::new();
    for (key, (r, addrs)) in groups {
        let (write, bytes) = (key.6, key.7 as usize);
        let units = if regions[r].shared {
            shared_wavefronts_sized(&addrs, bytes)
        } else {
            global_sectors_sized(&addrs, bytes)
        };
        let mut distinct = addrs.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let per_unit = if regions[r].shared { 128 } else { 32 } / bytes;
        let mut one = Traffic {
            lane_accesses: addrs.len() as u64,
            ideal_units: distinct.len().div_ceil(per_unit) as u64,
            ..Traffic::default()
        };
        if write {
            one.stores = 1;
            one.store_units = units;
        } else {
            one.loads = 1;
            one.load_units = units;
        }
        out[r].add(&one);
        sites.entry((key.2, key.3, key.4, r)).or_default().add(&one);
    }
    let mut busiest: HashMap<u32, u64> = HashMap::new();
    for ((phase, _), count) in per_lane {
        let b = busiest.entry(phase).or_insert(0);
        *b = (*b).max(count);
    }
    Model {
        critical_accesses: busiest.values().sum(),
        critical_warp_accesses: busiest_warp.values().sum(),
        regions: regions
            .iter()
            .zip(out)
            .map(|(r, t)| (r.name, r.shared, t))
            .collect(),
        unmatched,
        phases,
        sites: sites
            .into_iter()
            .map(|((file, line, col, r), t)| (file, line, col, regions[r].name, t))
            .collect(),
    }
}

fn alloc_traffic(n: usize) -> Vec<Traffic> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, Traffic::default());
    v
}
