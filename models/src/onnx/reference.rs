//! What a model was trained on, and how far today's data has moved from it: the population
//! stability index (PSI).
//!
//! The training script stores, per feature, the bin edges of its training distribution (deciles)
//! and the share of training rows in each bin, as JSON in the model's metadata under
//! [`METADATA_KEY`]. Streaming views count recent values into the same bins; PSI is
//! `Σ (observed − expected) · ln(observed / expected)` over the bins. The usual reading:
//! below 0.1 the data looks like training data, 0.1 to 0.25 it has moved, above 0.25 the model is
//! seeing data unlike what it learned from.

use serde::{Deserialize, Serialize};

/// The metadata key holding the training reference.
pub const METADATA_KEY: &str = "vibelux.reference";

/// A bin's share is floored at this, so an empty bin gives a large, finite PSI term.
const SMALLEST_SHARE: f64 = 1e-4;

/// One feature's training distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    /// Interior bin edges, ascending: `edges.len() + 1` bins, the first open below, the last
    /// open above. A value equal to an edge falls in the bin above it.
    pub edges: Vec<f64>,
    /// The share of training rows in each bin (sums to 1).
    pub expected: Vec<f64>,
}

#[derive(Deserialize)]
struct Stored {
    features: Vec<FeatureReference>,
}

impl FeatureReference {
    pub fn bins(&self) -> usize {
        self.expected.len()
    }

    /// The bin of `value`.
    pub fn bin_of(&self, value: f64) -> usize {
        self.edges.partition_point(|edge| *edge <= value)
    }

    /// PSI of the values counted per bin, or `None` when nothing was counted.
    pub fn population_stability(&self, counts: &[i64]) -> Option<f64> {
        let total: i64 = counts.iter().sum();
        if total <= 0 {
            return None;
        }
        let psi = counts
            .iter()
            .zip(&self.expected)
            .map(|(count, expected)| {
                let observed = (*count as f64 / total as f64).max(SMALLEST_SHARE);
                let expected = expected.max(SMALLEST_SHARE);
                (observed - expected) * (observed / expected).ln()
            })
            .sum();
        Some(psi)
    }

    fn check(&self) -> Result<(), String> {
        if self.expected.len() != self.edges.len() + 1 {
            return Err(format!(
                "feature {}: {} edges need {} shares, found {}",
                self.name,
                self.edges.len(),
                self.edges.len() + 1,
                self.expected.len()
            ));
        }
        if self.edges.windows(2).any(|pair| pair[0] > pair[1]) {
            return Err(format!("feature {}: edges are not ascending", self.name));
        }
        Ok(())
    }
}

/// Reads the references stored in a model's metadata.
pub fn parse(json: &str) -> Result<Vec<FeatureReference>, String> {
    let stored: Stored = serde_json::from_str(json).map_err(|error| error.to_string())?;
    for feature in &stored.features {
        feature.check()?;
    }
    Ok(stored.features)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quartiles() -> FeatureReference {
        FeatureReference {
            name: "temp_c".into(),
            edges: vec![20.0, 22.0, 24.0],
            expected: vec![0.25; 4],
        }
    }

    #[test]
    fn values_fall_in_the_bin_above_an_equal_edge() {
        let reference = quartiles();
        assert_eq!(reference.bin_of(-5.0), 0);
        assert_eq!(reference.bin_of(20.0), 1);
        assert_eq!(reference.bin_of(23.9), 2);
        assert_eq!(reference.bin_of(40.0), 3);
    }

    #[test]
    fn the_training_distribution_has_no_drift_and_a_shifted_one_has_much() {
        let reference = quartiles();
        assert_eq!(reference.population_stability(&[10, 10, 10, 10]), Some(0.0));
        assert_eq!(reference.population_stability(&[0, 0, 0, 0]), None);
        // The lowest bin emptied into the next one.
        let moved = reference.population_stability(&[0, 20, 10, 10]).unwrap();
        let by_hand = (0.0001f64 - 0.25) * (0.0001f64 / 0.25).ln() + 0.25 * 2f64.ln();
        assert!((moved - by_hand).abs() < 1e-12, "{moved} vs {by_hand}");
        assert!(moved > 0.25);
    }

    #[test]
    fn stored_references_are_checked() {
        let good = r#"{"features":[{"name":"rh","edges":[50.0],"expected":[0.5,0.5]}]}"#;
        assert_eq!(parse(good).unwrap()[0].bins(), 2);
        let short = r#"{"features":[{"name":"rh","edges":[50.0, 60.0],"expected":[0.5,0.5]}]}"#;
        assert!(parse(short).unwrap_err().contains("2 edges need 3 shares"));
    }
}
