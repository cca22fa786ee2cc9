//! The k-anonymity rule every analytics answer obeys, in one place.
//!
//! * **Buckets** — installations grouped by something they reported (a version, a country, a
//!   printer type, an error type, a feature switched on): a bucket with fewer than `k`
//!   installations never shows. [`fold`] moves every such bucket into `other`; if `other`
//!   itself has fewer than `k`, the smallest shown buckets join it until it reaches `k`; and if
//!   even everything together stays under `k`, the lot is **withheld** — counted in the
//!   answer's totals and its `withheld` figure, never shown as a bucket.
//! * **Figures summed over installations** (jobs in a week, errors in a week): shown only when
//!   0 or at least `k` installations contribute ([`shown`]); otherwise `null`.
//! * **Counts of installations over time** (active per day, installations seen so far) carry
//!   no attribute of anybody and are shown as they are, like Home Assistant's public analytics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Name of the bucket that collects small buckets.
pub const OTHER: &str = "other";

/// A bucket: how many installations fall into it, and a summed quantity (printers, errors …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Installations in the bucket.
    pub installations: u64,
    /// The bucket's summed quantity.
    pub total: u64,
}

impl Bucket {
    fn absorb(&mut self, b: Bucket) {
        self.installations += b.installations;
        self.total = self.total.saturating_add(b.total);
    }
}

/// What [`fold`] leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// The buckets that may show (each with at least `k` installations), `other` included.
    pub buckets: BTreeMap<String, Bucket>,
    /// What was too small to show even as `other`.
    pub withheld: Bucket,
}

/// Folds small buckets (see the module docs).
///
/// Installations of folded buckets are summed: an installation in two small buckets (a printer
/// type, an error type) counts twice in `other` — `other` answers "how many bucket
/// memberships", which is the conservative reading for the `k` check.
pub fn fold(map: BTreeMap<String, Bucket>, k: u32) -> Folded {
    let k = u64::from(k.max(1));
    type Named = Vec<(String, Bucket)>;
    let (mut keep, small): (Named, Named) = map
        .into_iter()
        .filter(|(_, b)| b.installations > 0)
        .partition(|(name, b)| b.installations >= k && name != OTHER);
    let mut other = Bucket::default();
    for (_, b) in small {
        other.absorb(b);
    }
    // Smallest last, so `pop` takes it.
    keep.sort_by(|a, b| {
        b.1.installations
            .cmp(&a.1.installations)
            .then_with(|| b.0.cmp(&a.0))
    });
    while other.installations > 0 && other.installations < k {
        match keep.pop() {
            Some((_, b)) => other.absorb(b),
            None => break,
        }
    }
    let mut buckets: BTreeMap<String, Bucket> = keep.into_iter().collect();
    let mut withheld = Bucket::default();
    if other.installations >= k {
        buckets.insert(OTHER.to_owned(), other);
    } else {
        withheld = other;
    }
    Folded { buckets, withheld }
}

/// Installations per bucket, folded; and how many installations were withheld.
pub fn k_anonymous(counts: BTreeMap<String, u64>, k: u32) -> (BTreeMap<String, u64>, u64) {
    let buckets = counts
        .into_iter()
        .map(|(name, n)| {
            (
                name,
                Bucket {
                    installations: n,
                    total: 0,
                },
            )
        })
        .collect();
    let folded = fold(buckets, k);
    (
        folded
            .buckets
            .into_iter()
            .map(|(name, b)| (name, b.installations))
            .collect(),
        folded.withheld.installations,
    )
}

/// Whether a figure that `installations` contribute to may show.
pub fn shown(installations: u64, k: u32) -> bool {
    installations == 0 || installations >= u64::from(k.max(1))
}

/// `n` of `total` in percent, one decimal (0 when `total` is 0).
pub fn percent(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (n as f64 / total as f64 * 1000.0).round() / 10.0
    }
}

/// Buckets by count (largest first, then by name), `other` last.
pub fn ranked(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut rows: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    rows.sort_by(|a, b| {
        (a.0 == OTHER)
            .cmp(&(b.0 == OTHER))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(b.0))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u64) -> Bucket {
        Bucket {
            installations: i,
            total: i * 10,
        }
    }

    #[test]
    fn small_buckets_fold_into_other_and_other_reaches_k() {
        let m: BTreeMap<String, Bucket> = [("a", 9), ("b", 6), ("c", 2), ("d", 1)]
            .into_iter()
            .map(|(n, i)| (n.to_owned(), b(i)))
            .collect();
        let out = fold(m.clone(), 5);
        // c+d = 3 < 5, so the smallest kept bucket (b) joins them.
        assert_eq!(out.buckets.len(), 2);
        assert_eq!(out.buckets["a"], b(9));
        assert_eq!(out.buckets[OTHER], b(9));
        assert_eq!(out.withheld, Bucket::default());
        assert_eq!(fold(m.clone(), 1).buckets.len(), 4);
        // Everything together under k: nothing shows.
        let out = fold(m, 100);
        assert!(out.buckets.is_empty());
        assert_eq!(out.withheld, b(18));
        assert_eq!(fold(BTreeMap::new(), 5), Folded::default());
    }

    proptest::proptest! {
        /// Whatever the fleet and whatever k: no bucket holds fewer than k installations, and
        /// nobody is lost (shown + withheld = all).
        #[test]
        fn no_bucket_under_k(
            counts in proptest::collection::btree_map("[a-z]{1,3}|other", 0u64..20, 0..12),
            k in 1u32..12,
        ) {
            let total: u64 = counts.values().sum();
            let (shown, withheld) = k_anonymous(counts, k);
            proptest::prop_assert_eq!(shown.values().sum::<u64>() + withheld, total);
            for (name, n) in &shown {
                proptest::prop_assert!(*n >= u64::from(k), "{name}: {n} < {k}");
            }
            proptest::prop_assert!(withheld < u64::from(k));
        }
    }
}
