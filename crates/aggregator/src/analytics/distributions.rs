//! `/stats/deployment-modes`, `/stats/versions`, `/stats/geography`, `/stats/printers`, and
//! the platforms of the overview: installations per value over each installation's latest
//! report in the window, folded ([`super::anonymity`]).
//!
//! Where upstream is weak, ours differs: percentages are of all installations (not of the rows
//! shown), `latest_version` is the highest version shown (not the most common one),
//! `total_versions`/`total_countries` count every value shown (not only the first `limit`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Ask;
use super::anonymity::{Bucket, OTHER, fold, k_anonymous, percent, ranked};
use crate::Result;
use crate::store::{Dimension, SubmissionStore, Tally};

/// A version as numbers, for "the highest" (`None` for `other`, `unknown`).
pub(crate) fn version_key(v: &str) -> Option<Vec<u64>> {
    let core = v.trim_start_matches('v').split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

/// A country's English name (the codes upstream names, and the unknown code).
fn country_name(code: &str) -> String {
    let name = match code {
        "XX" => "Unknown",
        OTHER => "Other",
        "AT" => "Austria",
        "AU" => "Australia",
        "BE" => "Belgium",
        "BR" => "Brazil",
        "CA" => "Canada",
        "CH" => "Switzerland",
        "CN" => "China",
        "CZ" => "Czech Republic",
        "DE" => "Germany",
        "DK" => "Denmark",
        "ES" => "Spain",
        "FI" => "Finland",
        "FR" => "France",
        "GB" => "United Kingdom",
        "IE" => "Ireland",
        "IN" => "India",
        "IT" => "Italy",
        "JP" => "Japan",
        "KR" => "South Korea",
        "MX" => "Mexico",
        "NL" => "Netherlands",
        "NO" => "Norway",
        "NZ" => "New Zealand",
        "PL" => "Poland",
        "PT" => "Portugal",
        "RU" => "Russia",
        "SE" => "Sweden",
        "UA" => "Ukraine",
        "US" => "United States",
        other => other,
    };
    name.to_owned()
}

impl<S: SubmissionStore> Ask<'_, S> {
    /// Installations per value of `dimension` (not folded yet).
    async fn counts(
        &self,
        dimension: Dimension,
        since: DateTime<Utc>,
    ) -> Result<BTreeMap<String, u64>> {
        Ok(self
            .tally(Tally::Latest(dimension, since))
            .await?
            .into_iter()
            .map(|r| {
                let n = r.count(0);
                (r.key, n)
            })
            .collect())
    }

    /// `GET /stats/deployment-modes`.
    pub async fn deployment_modes(&self, since: DateTime<Utc>) -> Result<Value> {
        let counts = self.counts(Dimension::DeploymentMode, since).await?;
        let total: u64 = counts.values().sum();
        let (counts, withheld) = k_anonymous(counts, self.k);
        let percentages: BTreeMap<&str, f64> = counts
            .iter()
            .map(|(mode, n)| (mode.as_str(), percent(*n, total)))
            .collect();
        Ok(json!({
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
            "withheld": withheld,
            "k_anonymity": self.k,
        }))
    }

    /// Installations per operating system (part of the overview).
    pub async fn platforms(&self, since: DateTime<Utc>) -> Result<Value> {
        let counts = self.counts(Dimension::Platform, since).await?;
        let total: u64 = counts.values().sum();
        let (counts, withheld) = k_anonymous(counts, self.k);
        Ok(json!({"total": total, "breakdown": counts, "withheld": withheld}))
    }

    /// `GET /stats/versions?limit=`: the `limit` largest buckets (`other` counted among them).
    pub async fn versions(&self, since: DateTime<Utc>, limit: usize) -> Result<Value> {
        let counts = self.counts(Dimension::AppVersion, since).await?;
        let total: u64 = counts.values().sum();
        let (counts, withheld) = k_anonymous(counts, self.k);
        let rows: Vec<Value> = ranked(&counts)
            .into_iter()
            .take(limit)
            .map(|(version, n)| {
                json!({"version": version, "count": n, "percentage": percent(n, total)})
            })
            .collect();
        let latest = counts
            .iter()
            .filter_map(|(v, n)| version_key(v).map(|key| (key, v, *n)))
            .max_by(|a, b| a.0.cmp(&b.0));
        Ok(json!({
            "versions": rows,
            "latest_version": latest.as_ref().map(|l| l.1),
            "adoption_rate_latest": latest.map_or(0.0, |l| percent(l.2, total)),
            "total_versions": counts.keys().filter(|v| *v != OTHER).count(),
            "total_installations": total,
            "withheld": withheld,
            "k_anonymity": self.k,
        }))
    }

    /// `GET /stats/geography?limit=`.
    pub async fn geography(&self, since: DateTime<Utc>, limit: usize) -> Result<Value> {
        let counts = self.counts(Dimension::CountryCode, since).await?;
        let total: u64 = counts.values().sum();
        let (counts, withheld) = k_anonymous(counts, self.k);
        let rows: Vec<Value> = ranked(&counts)
            .into_iter()
            .take(limit)
            .map(|(code, n)| {
                json!({"code": code, "name": country_name(code), "count": n,
                       "percentage": percent(n, total)})
            })
            .collect();
        Ok(json!({
            "countries": rows,
            "total_countries": counts.keys().filter(|c| *c != OTHER && *c != "XX").count(),
            "total_installations": total,
            "withheld": withheld,
            "k_anonymity": self.k,
        }))
    }

    /// `GET /stats/printers`: the fleet over each installation's latest report; printer types
    /// folded by the installations that have them.
    pub async fn printers(&self, since: DateTime<Utc>) -> Result<Value> {
        let totals = self.one(Tally::FleetTotals(since)).await?;
        let (installations, printers) = (totals.count(0), totals.count(1));
        let types: BTreeMap<String, Bucket> = self
            .tally(Tally::PrinterTypes(since))
            .await?
            .into_iter()
            .map(|r| {
                let b = Bucket {
                    installations: r.count(0),
                    total: r.count(1),
                };
                (r.key, b)
            })
            .collect();
        let folded = fold(types, self.k);
        let average = if installations == 0 {
            0.0
        } else {
            (printers as f64 / installations as f64 * 10.0).round() / 10.0
        };
        let types = &folded.buckets;
        Ok(json!({
            "total_printers": printers,
            "total_installations": installations,
            "average_per_installation": average,
            "types": types.iter().map(|(t, b)| (t.clone(), b.total)).collect::<BTreeMap<_, _>>(),
            "type_installations": types
                .iter()
                .map(|(t, b)| (t.clone(), b.installations))
                .collect::<BTreeMap<_, _>>(),
            "withheld_printers": folded.withheld.total,
            "k_anonymity": self.k,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_number_not_text() {
        assert!(version_key("2.10.1") > version_key("2.9.0"));
        assert_eq!(version_key("other"), None);
        assert_eq!(version_key("v2.7.0-beta"), Some(vec![2, 7, 0]));
        assert_eq!(country_name("DE"), "Germany");
        assert_eq!(country_name("LI"), "LI");
    }
}
