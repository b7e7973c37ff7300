//! The split of a job's ranks into groups: by node (the ranks that share a node share its
//! GPUs and, with 3+ ranks, its reader and writer) or in groups of a given size. With more
//! than one group, world rank 0 leaves its group to coordinate: it hands chunks of frames to
//! the groups as they ask ([`super::night`]) and does nothing else, polling instead of
//! spinning in MPI.
//!
//! Within a group the ranks run `exposure`'s modes ([`super::roles`]); a rank's GPU is its
//! rank among the working ranks of its node (the coordinator excluded) modulo the node's GPUs.

use crate::parallel::Comm;

/// How the ranks are split into groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupSize {
    /// One group per node (MPI_Comm_split_type shared).
    #[default]
    ByNode,
    /// Groups of this many consecutive ranks (the last may be smaller).
    Ranks(usize),
}

/// This rank's place in the split.
#[derive(Debug)]
pub struct Groups {
    /// This rank's group (`None` on the coordinator).
    pub comm: Option<Comm>,
    /// This rank's group among the groups (0 on the coordinator).
    pub index: usize,
    /// Number of groups.
    pub count: usize,
    /// The coordinating world rank, when there is more than one group.
    pub coordinator: Option<usize>,
}

/// Each world rank's group key (`color`), rank 0's left out when there is more than one group:
/// the colors, the number of groups and the coordinator. `leaders[r]` is the lowest world rank
/// on rank `r`'s node.
pub fn assign(leaders: &[usize], size: GroupSize) -> (Vec<Option<usize>>, usize, Option<usize>) {
    let mut colors: Vec<Option<usize>> = match size {
        GroupSize::ByNode => leaders.iter().map(|&l| Some(l)).collect(),
        GroupSize::Ranks(n) => (0..leaders.len()).map(|r| Some(r / n.max(1))).collect(),
    };
    let distinct = |colors: &[Option<usize>]| {
        let mut keys: Vec<usize> = colors.iter().flatten().copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    };
    if distinct(&colors).len() <= 1 {
        return (colors, 1, None);
    }
    colors[0] = None;
    // Renumber the groups 0..count in the order of their lowest rank.
    let keys = distinct(&colors);
    let colors = colors
        .iter()
        .map(|c| c.and_then(|c| keys.iter().position(|&k| k == c)))
        .collect();
    (colors, keys.len(), Some(0))
}

/// Splits the ranks of `world` (every rank calls it).
pub fn split(world: &Comm, size: GroupSize) -> Groups {
    let node = world.split_by_node();
    // The lowest world rank of each node (rank 0 of the node, whose ranks are in world order).
    let leader = node.broadcast(0, (world.rank() as u64).to_le_bytes().to_vec());
    let leader = u64_from(&leader) as usize;
    // Rank 0 gathers every rank's node and tells everybody the split.
    let table = if world.rank() == 0 {
        let mut leaders = vec![leader];
        for source in 1..world.size() {
            leaders.push(u64_from(&world.recv(source)) as usize);
        }
        let (colors, _, _) = assign(&leaders, size);
        colors
            .iter()
            .flat_map(|c| c.map_or(u64::MAX, |c| c as u64).to_le_bytes())
            .collect()
    } else {
        world.send(0, &(leader as u64).to_le_bytes());
        Vec::new()
    };
    let table = world.broadcast(0, table);
    let colors: Vec<Option<usize>> = table
        .chunks_exact(8)
        .map(|c| {
            Some(u64_from(c))
                .filter(|&v| v != u64::MAX)
                .map(|v| v as usize)
        })
        .collect();
    let mine = colors.get(world.rank()).copied().flatten();
    let count = {
        let mut keys: Vec<usize> = colors.iter().flatten().copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys.len().max(1)
    };
    let coordinator = (colors.first() == Some(&None)).then_some(0);
    // The GPU of a working rank: its rank on the node, not counting the coordinator.
    let local = node.rank() - usize::from(coordinator.is_some() && leader == 0 && node.rank() > 0);
    let comm = world
        .split(mine.map(|c| c as u32), world.rank())
        .map(|c| c.with_local_rank(local));
    drop(node);
    Groups {
        comm,
        index: mine.unwrap_or(0),
        count,
        coordinator,
    }
}

fn u64_from(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    for (dst, src) in raw.iter_mut().zip(bytes) {
        *dst = *src;
    }
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_node_and_by_size_with_rank_0_coordinating() {
        // One node: one group, no coordinator, whatever the rank count.
        assert_eq!(
            assign(&[0; 4], GroupSize::ByNode),
            (vec![Some(0); 4], 1, None)
        );
        assert_eq!(assign(&[0], GroupSize::Ranks(3)), (vec![Some(0)], 1, None));
        // Two nodes of 3 ranks: rank 0 coordinates, its node keeps ranks 1 and 2.
        let two_nodes = [0, 0, 0, 3, 3, 3];
        let (colors, count, coordinator) = assign(&two_nodes, GroupSize::ByNode);
        assert_eq!(colors, [None, Some(0), Some(0), Some(1), Some(1), Some(1)]);
        assert_eq!((count, coordinator), (2, Some(0)));
        // Six ranks on one node in groups of 3 (CI): the same split.
        assert_eq!(assign(&[0; 6], GroupSize::Ranks(3)).0, colors);
        // Groups of one: rank 0's group disappears.
        let (colors, count, _) = assign(&[0; 3], GroupSize::Ranks(1));
        assert_eq!((colors, count), (vec![None, Some(0), Some(1)], 2));
        // Groups of 4 of 6 ranks: 4 + 2, minus the coordinator.
        let (colors, count, _) = assign(&[0; 6], GroupSize::Ranks(4));
        assert_eq!(colors, [None, Some(0), Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(count, 2);
    }

    #[test]
    fn one_process_is_one_group() {
        let world = Comm::single();
        let groups = split(&world, GroupSize::Ranks(1));
        assert_eq!(
            (groups.index, groups.count, groups.coordinator),
            (0, 1, None)
        );
        let comm = groups.comm.expect("a group");
        assert_eq!((comm.rank(), comm.size(), comm.local_rank()), (0, 1, 0));
    }
}
