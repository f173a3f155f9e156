//! A ledger as its events leave it (confirmed ranges, holes), and
//! [`apply`], the fold.

use serde::{Deserialize, Serialize};

use super::{ChainAnchor, LedgerEvent, PositionRange};

/// A ledger as its events leave it. Serde only for its snapshots
/// ([`super::Ledgers`]' state schema: raise it when this changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Confirmed positions: sorted, disjoint, non-adjacent ranges.
    pub confirmed: Vec<PositionRange>,
    /// The anchor at the highest position (`None`: the ledger never sent a
    /// chain hash).
    pub anchor: Option<ChainAnchor>,
}

impl LedgerState {
    /// The state confirming exactly `ranges` (in any order, overlapping or
    /// not).
    pub fn from_ranges(ranges: Vec<PositionRange>) -> Self {
        Self {
            confirmed: merge(ranges),
            anchor: None,
        }
    }

    /// Every position from 1 to this is confirmed (0: not even 1).
    pub fn confirmed_through(&self) -> u64 {
        match self.confirmed.first() {
            Some(range) if range.from == 1 => range.to,
            _ => 0,
        }
    }

    /// The last position whose chain hash the ledger holds (0: none).
    pub fn anchored_through(&self) -> u64 {
        self.anchor.as_ref().map_or(0, |anchor| anchor.position)
    }

    /// The highest confirmed position (0 when none).
    pub fn max_confirmed(&self) -> u64 {
        self.confirmed.last().map_or(0, |range| range.to)
    }

    /// How many positions up to `limit` are confirmed.
    pub fn count_through(&self, limit: u64) -> u64 {
        self.confirmed
            .iter()
            .filter(|range| range.from <= limit)
            .map(|range| range.to.min(limit) - range.from + 1)
            .sum()
    }

    /// How many positions are confirmed.
    pub fn count(&self) -> u64 {
        self.confirmed
            .iter()
            .map(|range| range.to - range.from + 1)
            .sum()
    }

    /// The unconfirmed ranges between 1 and [`LedgerState::max_confirmed`].
    pub fn holes(&self) -> Vec<PositionRange> {
        let mut holes = Vec::new();
        let mut next = 1;
        for range in &self.confirmed {
            if range.from > next {
                holes.push(PositionRange {
                    from: next,
                    to: range.from - 1,
                });
            }
            next = range.to + 1;
        }
        holes
    }

    /// Whether `position` is confirmed.
    pub fn contains(&self, position: u64) -> bool {
        self.confirmed
            .binary_search_by(|range| {
                if range.to < position {
                    std::cmp::Ordering::Less
                } else if range.from > position {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

/// The state after `event`.
pub fn apply(mut state: LedgerState, event: &LedgerEvent) -> LedgerState {
    let LedgerEvent::Confirmed(confirmed) = event;
    state.confirmed = merge(
        state
            .confirmed
            .iter()
            .chain(&confirmed.ranges)
            .copied()
            .collect(),
    );
    if let Some(anchor) = &confirmed.anchor {
        if anchor.position > state.anchored_through() {
            state.anchor = Some(anchor.clone());
        }
    }
    state
}

/// Sorted, disjoint, non-adjacent ranges covering the same positions.
pub(super) fn merge(mut ranges: Vec<PositionRange>) -> Vec<PositionRange> {
    ranges.sort_unstable();
    let mut merged: Vec<PositionRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.from <= last.to.saturating_add(1) => {
                last.to = last.to.max(range.to)
            }
            _ => merged.push(range),
        }
    }
    merged
}
