//! Which offsets of a partition may be committed: Kafka keeps one position per partition, but
//! sagaflow settles deliveries one by one and not always in order, so the position may only
//! move past a message once it and every message before it are settled.

use std::collections::{BTreeSet, HashMap};

/// The deliveries of one consumer not yet settled, per partition.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    partitions: HashMap<i32, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets delivered (or held back) and not yet settled.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: i64,
}

impl Offsets {
    /// A message was received: its offset must not be committed past until it is settled.
    pub(crate) fn register(&mut self, partition: i32, offset: i64) {
        let p = self.partitions.entry(partition).or_default();
        p.outstanding.insert(offset);
        p.next = p.next.max(offset + 1);
    }

    /// A message was settled. Returns the partition's new commit position (the first offset
    /// still outstanding, or one past the highest seen) when settling it moved the position.
    pub(crate) fn settle(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition)?;
        if !p.outstanding.remove(&offset) {
            return None;
        }
        let position = p.outstanding.first().copied().unwrap_or(p.next);
        (position > offset).then_some(position)
    }

    /// Is this message received and not yet settled (its partition not taken away since)?
    pub(crate) fn holds(&self, partition: i32, offset: i64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| p.outstanding.contains(&offset))
    }

    /// The partition went to another consumer: whatever was outstanding here is that
    /// consumer's to deliver again, from the last committed position.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::Offsets;

    #[test]
    fn the_position_waits_for_the_oldest_unsettled_message() {
        let mut o = Offsets::default();
        for offset in 10..14 {
            o.register(0, offset);
        }
        assert_eq!(o.settle(0, 11), None, "10 is still outstanding");
        assert_eq!(o.settle(0, 13), None);
        assert_eq!(o.settle(0, 10), Some(12), "10 and 11 settled, 12 not");
        assert_eq!(
            o.settle(0, 12),
            Some(14),
            "all settled: one past the highest"
        );
        assert_eq!(o.settle(0, 12), None, "settling twice changes nothing");
    }

    #[test]
    fn partitions_are_independent_and_forgotten_ones_settle_nothing() {
        let mut o = Offsets::default();
        o.register(0, 5);
        o.register(1, 7);
        assert_eq!(o.settle(1, 7), Some(8));
        o.forget(0);
        assert_eq!(
            o.settle(0, 5),
            None,
            "a revoked partition's late ack moves nothing"
        );
        o.register(0, 3);
        assert_eq!(
            o.settle(0, 3),
            Some(4),
            "delivered again from its committed position"
        );
    }
}
