//! The distribution routes of upstream's analytics (`/stats/deployment-modes`,
//! `/stats/versions`, `/stats/geography`, `/stats/printers`), k-anonymous.
//!
//! The database counts installations per value over each installation's latest report
//! ([`crate::store::Dimension`]); here only the few resulting buckets are folded and shaped,
//! so memory does not grow with the number of installations. Every bucket with fewer than
//! `k` installations goes into `other`, and `other` itself takes the smallest buckets until it
//! holds `k` ([`crate::overview::fold_small`]) — no answer singles out fewer than `k`
//! installations, unless all of them together are fewer.
//!
//! Shapes follow upstream's (docs/upstream-aggregator.md §2.2–2.4); where upstream is weak,
//! ours differs: percentages are of all installations (not of the rows shown),
//! `latest_version` is the highest version shown (not the most common one), and each answer
//! says which `k_anonymity` it applied.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::overview::{Bucket, OTHER, fold_small};
use crate::store::Fleet;

/// Installations per bucket after folding every bucket under `k` into `other`.
pub fn k_anonymous(counts: BTreeMap<String, u64>, k: u32) -> BTreeMap<String, u64> {
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
    fold_small(buckets, u64::from(k.max(1)))
        .into_iter()
        .map(|(name, b)| (name, b.installations))
        .collect()
}

fn percent(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (n as f64 / total as f64 * 1000.0).round() / 10.0
    }
}

/// Buckets by count (largest first, then by name), `other` last.
fn ranked(counts: &BTreeMap<String, u64>) -> Vec<(&str, u64)> {
    let mut rows: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    rows.sort_by(|a, b| {
        (a.0 == OTHER)
            .cmp(&(b.0 == OTHER))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(b.0))
    });
    rows
}

/// `GET /stats/deployment-modes`.
pub fn deployment_modes(counts: BTreeMap<String, u64>, k: u32) -> Value {
    let counts = k_anonymous(counts, k);
    let total: u64 = counts.values().sum();
    let percentages: BTreeMap<&str, f64> = counts
        .iter()
        .map(|(mode, n)| (mode.as_str(), percent(*n, total)))
        .collect();
    json!({
        "total": total,
        "breakdown": counts,
        "percentages": percentages,
        "display_names": {
            "homeassistant": "Home Assistant",
            "docker": "Docker",
            "standalone": "Standalone",
            "pi": "Raspberry Pi",
            "other": "Other"
        },
        "k_anonymity": k,
    })
}

/// A version as numbers, for "the highest" (`None` for `other`, `unknown`).
fn version_key(v: &str) -> Option<Vec<u64>> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

/// `GET /stats/versions?limit=`: the `limit` largest buckets (`other` counted among them).
pub fn versions(counts: BTreeMap<String, u64>, k: u32, limit: usize) -> Value {
    let counts = k_anonymous(counts, k);
    let total: u64 = counts.values().sum();
    let rows: Vec<Value> = ranked(&counts)
        .into_iter()
        .take(limit)
        .map(
            |(version, n)| json!({"version": version, "count": n, "percentage": percent(n, total)}),
        )
        .collect();
    let latest = counts
        .iter()
        .filter_map(|(v, n)| version_key(v).map(|key| (key, v, *n)))
        .max_by(|a, b| a.0.cmp(&b.0));
    json!({
        "versions": rows,
        "latest_version": latest.as_ref().map(|l| l.1),
        "adoption_rate_latest": latest.map_or(0.0, |l| percent(l.2, total)),
        "total_versions": counts.keys().filter(|v| *v != OTHER).count(),
        "total_installations": total,
        "k_anonymity": k,
    })
}

/// `GET /stats/printers`: the fleet over each installation's latest report; printer types
/// folded by the installations that have them.
pub fn printers(fleet: Fleet, k: u32) -> Value {
    let types = fold_small(fleet.types, u64::from(k.max(1)));
    let average = if fleet.installations == 0 {
        0.0
    } else {
        (fleet.printers as f64 / fleet.installations as f64 * 10.0).round() / 10.0
    };
    json!({
        "total_printers": fleet.printers,
        "total_installations": fleet.installations,
        "average_per_installation": average,
        "types": types.iter().map(|(t, b)| (t.clone(), b.total)).collect::<BTreeMap<_, _>>(),
        "type_installations": types
            .iter()
            .map(|(t, b)| (t.clone(), b.installations))
            .collect::<BTreeMap<_, _>>(),
        "k_anonymity": k,
    })
}

/// `GET /stats/geography?limit=`.
pub fn geography(counts: BTreeMap<String, u64>, k: u32, limit: usize) -> Value {
    let counts = k_anonymous(counts, k);
    let total: u64 = counts.values().sum();
    let name = |code: &str| match code {
        "XX" => "Unknown".to_owned(),
        OTHER => "Other".to_owned(),
        code => code.to_owned(),
    };
    let rows: Vec<Value> = ranked(&counts)
        .into_iter()
        .take(limit)
        .map(|(code, n)| {
            json!({"code": code, "name": name(code), "count": n, "percentage": percent(n, total)})
        })
        .collect();
    json!({
        "countries": rows,
        "total_countries": counts.keys().filter(|c| *c != OTHER && *c != "XX").count(),
        "total_installations": total,
        "k_anonymity": k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn shapes_and_folding() {
        let v = deployment_modes(
            fleet(&[
                ("docker", 6),
                ("homeassistant", 4),
                ("pi", 2),
                ("standalone", 1),
            ]),
            3,
        );
        assert_eq!(
            v["breakdown"],
            json!({"docker": 6, "homeassistant": 4, "other": 3})
        );
        assert_eq!(v["total"], 13);
        assert_eq!(v["percentages"]["docker"], 46.2);
        let v = versions(fleet(&[("2.7.0", 5), ("2.10.1", 3), ("2.6.0", 3)]), 3, 10);
        assert_eq!(v["latest_version"], "2.10.1", "highest, not most common");
        assert_eq!(
            v["versions"][0],
            json!({"version": "2.7.0", "count": 5, "percentage": 45.5})
        );
        assert_eq!(v["versions"][2]["version"], "2.6.0");
        let v = versions(fleet(&[("2.7.0", 5), ("2.10.1", 3), ("2.6.0", 1)]), 3, 10);
        assert_eq!(v["versions"][1]["version"], "other", "{v}");
        assert_eq!(v["latest_version"], "2.7.0");
        let v = geography(fleet(&[("DE", 4), ("AT", 3), ("XX", 4)]), 2, 1);
        assert_eq!(v["countries"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["total_countries"], 2);
    }

    proptest::proptest! {
        /// Whatever the fleet and whatever k, no bucket holds fewer than k installations
        /// (unless the whole fleet is smaller than k) and nobody is lost.
        #[test]
        fn no_bucket_under_k(
            counts in proptest::collection::btree_map("[a-z]{1,3}", 1u64..20, 0..12),
            k in 1u32..12,
        ) {
            let total: u64 = counts.values().sum();
            let folded = k_anonymous(counts, k);
            proptest::prop_assert_eq!(folded.values().sum::<u64>(), total);
            if total >= u64::from(k) {
                for (name, n) in &folded {
                    proptest::prop_assert!(*n >= u64::from(k), "{name}: {n} < {k}");
                }
            }
        }
    }
}
