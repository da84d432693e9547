//! Sets of address ranges: sorted, disjoint, adjacent ones merged. What a pre-copy round
//! reports and the tracker remembers between rounds; the pages a restore holds and keeps.

use std::ops::Range;

/// A set of half-open address ranges, kept sorted, disjoint and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// The ranges, in address order.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    pub fn contains(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= addr);
        self.ranges.get(i).is_some_and(|r| r.start <= addr)
    }

    /// Add `r` (empty ranges are ignored).
    pub fn insert(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        // Fast path: appending in address order, as scans produce them.
        match self.ranges.last_mut() {
            None => self.ranges.push(r),
            Some(last) if last.end < r.start => self.ranges.push(r),
            Some(last) if last.start <= r.start => last.end = last.end.max(r.end),
            Some(_) => {
                self.ranges.push(r);
                self.normalize();
            }
        }
    }

    pub fn union(&self, other: &RangeSet) -> RangeSet {
        let mut all: Vec<Range<u64>> = self.ranges.iter().chain(&other.ranges).cloned().collect();
        all.sort_by_key(|r| r.start);
        let mut out = RangeSet::new();
        for r in all {
            out.insert(r);
        }
        out
    }

    /// The parts of `self` that `other` does not cover.
    pub fn minus(&self, other: &RangeSet) -> RangeSet {
        let mut out = RangeSet::new();
        let mut j = 0;
        for r in &self.ranges {
            let mut at = r.start;
            while j < other.ranges.len() && other.ranges[j].end <= at {
                j += 1;
            }
            let mut k = j;
            while at < r.end {
                match other.ranges.get(k) {
                    Some(o) if o.start < r.end => {
                        if o.start > at {
                            out.insert(at..o.start);
                        }
                        at = at.max(o.end);
                        k += 1;
                    }
                    _ => {
                        out.insert(at..r.end);
                        at = r.end;
                    }
                }
            }
        }
        out
    }

    /// The parts of `self` that `other` covers too.
    pub fn and(&self, other: &RangeSet) -> RangeSet {
        self.minus(&self.minus(other))
    }

    /// The parts of `[start, end)` that `self` does not cover.
    pub fn gaps_in(&self, start: u64, end: u64) -> RangeSet {
        let mut whole = RangeSet::new();
        whole.insert(start..end);
        whole.minus(self)
    }

    /// Whether `self` covers all of `[start, end)`.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges
            .get(i)
            .is_some_and(|r| r.start <= start && end <= r.end)
    }

    /// Whether `self` covers any of `[start, end)`.
    pub fn touches(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= start);
        self.ranges.get(i).is_some_and(|r| r.start < end)
    }

    /// The parts of `self` inside `[start, end)`.
    pub fn within(&self, start: u64, end: u64) -> RangeSet {
        let mut out = RangeSet::new();
        let first = self.ranges.partition_point(|r| r.end <= start);
        for r in self.ranges.iter().skip(first) {
            if r.start >= end {
                break;
            }
            out.insert(r.start.max(start)..r.end.min(end));
        }
        out
    }

    fn normalize(&mut self) {
        self.ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        self.ranges = merged;
    }
}

impl FromIterator<Range<u64>> for RangeSet {
    fn from_iter<I: IntoIterator<Item = Range<u64>>>(iter: I) -> RangeSet {
        let mut out = RangeSet::new();
        for r in iter {
            out.insert(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(u64, u64)]) -> RangeSet {
        v.iter().map(|&(a, b)| a..b).collect()
    }

    #[test]
    fn insert_merges_and_sorts() {
        let s = set(&[(10, 20), (30, 40), (20, 25), (0, 5), (4, 11)]);
        assert_eq!(s.ranges(), &[0..25, 30..40]);
        assert_eq!(s.bytes(), 35);
        assert!(s.contains(0) && s.contains(24) && !s.contains(25) && s.contains(39));
    }

    #[test]
    fn set_operations() {
        let a = set(&[(0, 100), (200, 300)]);
        let b = set(&[(50, 60), (90, 210), (250, 260)]);
        assert_eq!(a.minus(&b).ranges(), &[0..50, 60..90, 210..250, 260..300]);
        assert_eq!(a.and(&b).ranges(), &[50..60, 90..100, 200..210, 250..260]);
        let all = a.union(&b);
        assert_eq!((all.ranges().len(), all.bytes()), (1, 300));
        assert_eq!(a.within(80, 220).ranges(), &[80..100, 200..220]);
        assert_eq!(b.minus(&RangeSet::new()), b);
        assert!(RangeSet::new().minus(&a).is_empty());
        assert_eq!(
            b.gaps_in(40, 270).ranges(),
            &[40..50, 60..90, 210..250, 260..270]
        );
        assert!(a.covers(10, 100) && !a.covers(90, 210) && !a.covers(100, 200));
        assert!(a.touches(90, 210) && !a.touches(100, 200) && a.touches(299, 400));
    }

    #[test]
    fn gaps_in_a_range() {
        let gaps = |v: &[(u64, u64)], a, b| -> Vec<(u64, u64)> {
            set(v)
                .gaps_in(a, b)
                .ranges()
                .iter()
                .map(|r| (r.start, r.end))
                .collect()
        };
        assert_eq!(gaps(&[], 0, 10), [(0, 10)]);
        assert!(gaps(&[(0, 10)], 0, 10).is_empty());
        assert_eq!(gaps(&[(0, 4)], 0, 10), [(4, 10)]);
        assert_eq!(gaps(&[(4, 6)], 0, 10), [(0, 4), (6, 10)]);
        assert_eq!(gaps(&[(0, 2), (4, 6), (12, 20)], 1, 14), [(2, 4), (6, 12)]);
        assert_eq!(gaps(&[(20, 30)], 0, 10), [(0, 10)]);
    }
}
