//! Half-Space Trees (Tan, Ting and Liu, 2011): a multivariate detector for several readings of
//! one place at once (temperature, humidity, CO2 of a zone), where each can look normal alone
//! while the combination does not.
//!
//! Each tree halves the (normalised) space on a random dimension at every level, down to a fixed
//! depth, and counts how many recent points fall in each cell: the mass of the reference window
//! (the previous `window` points) and of the latest one. A point in a sparsely populated cell,
//! weighted by how deep the cell is, is unusual. Masses swap every `window` points, so the
//! model follows slow change. Features are normalised by the range seen in the first window.

use serde::{Deserialize, Serialize};

use crate::detector::MultiDetector;

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Node {
    dimension: usize,
    split: f64,
    reference: u32,
    latest: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tree {
    /// A complete binary tree in an array: node i has children 2i+1 and 2i+2.
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HalfSpaceTrees {
    trees: Vec<Tree>,
    depth: u32,
    window: usize,
    seen: usize,
    /// Per dimension: the range from the first window (min, max), then fixed.
    ranges: Vec<(f64, f64)>,
    first: Vec<Vec<f64>>,
    dimensions: usize,
}

/// A small deterministic generator: the same trees on every run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl HalfSpaceTrees {
    pub fn new(dimensions: usize, trees: usize, depth: u32, window: usize) -> Self {
        let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
        let trees = (0..trees)
            .map(|_| {
                // Each tree gets its own randomly shifted work space around [0, 1].
                let mut low = Vec::with_capacity(dimensions);
                let mut high = Vec::with_capacity(dimensions);
                for _ in 0..dimensions {
                    let s = random.next();
                    let range = 2.0 * s.max(1.0 - s);
                    low.push(s - range);
                    high.push(s + range);
                }
                let mut nodes = vec![Node::default(); (1 << (depth + 1)) - 1];
                build(&mut nodes, 0, &mut low, &mut high, depth, &mut random);
                Tree { nodes }
            })
            .collect();
        HalfSpaceTrees {
            trees,
            depth,
            window,
            seen: 0,
            ranges: Vec::new(),
            first: Vec::new(),
            dimensions,
        }
    }

    fn normalise(&self, values: &[f64]) -> Vec<f64> {
        values
            .iter()
            .zip(&self.ranges)
            .map(|(value, (low, high))| {
                let span = (high - low).max(1e-9);
                (value - low) / span
            })
            .collect()
    }
}

fn build(
    nodes: &mut [Node],
    index: usize,
    low: &mut [f64],
    high: &mut [f64],
    depth: u32,
    random: &mut XorShift,
) {
    if depth == 0 {
        return;
    }
    let dimension = ((random.next() * low.len() as f64) as usize).min(low.len() - 1);
    let split = (low[dimension] + high[dimension]) / 2.0;
    nodes[index].dimension = dimension;
    nodes[index].split = split;
    let saved = high[dimension];
    high[dimension] = split;
    build(nodes, 2 * index + 1, low, high, depth - 1, random);
    high[dimension] = saved;
    let saved = low[dimension];
    low[dimension] = split;
    build(nodes, 2 * index + 2, low, high, depth - 1, random);
    low[dimension] = saved;
}

impl MultiDetector for HalfSpaceTrees {
    fn update(&mut self, _ts: i64, values: &[f64]) -> Option<f64> {
        if values.len() != self.dimensions {
            return None;
        }
        if self.ranges.is_empty() {
            self.first.push(values.to_vec());
            if self.first.len() < self.window {
                return None;
            }
            self.ranges = (0..self.dimensions)
                .map(|d| {
                    let column = self.first.iter().map(|point| point[d]);
                    let low = column.clone().fold(f64::MAX, f64::min);
                    let high = column.fold(f64::MIN, f64::max);
                    (low, high)
                })
                .collect();
            for point in std::mem::take(&mut self.first) {
                let point = self.normalise(&point);
                self.learn(&point);
            }
            self.swap();
            return None;
        }
        let point = self.normalise(values);
        // Mass-weighted by depth: low in sparse cells. The raw score is its inverse.
        let mut mass = 0.0;
        for tree in &self.trees {
            let mut index = 0;
            let mut level = 0;
            while level < self.depth {
                let node = tree.nodes[index];
                if node.reference < 2 {
                    break;
                }
                index = if point[node.dimension] < node.split {
                    2 * index + 1
                } else {
                    2 * index + 2
                };
                level += 1;
            }
            mass += f64::from(tree.nodes[index].reference) * f64::from(1u32 << level);
        }
        self.learn(&point);
        self.seen += 1;
        if self.seen.is_multiple_of(self.window) {
            self.swap();
        }
        Some(1.0 / (1.0 + mass / self.trees.len() as f64))
    }

    fn warm_up(&self) -> usize {
        self.window
    }
}

impl HalfSpaceTrees {
    fn learn(&mut self, point: &[f64]) {
        let depth = self.depth;
        for tree in &mut self.trees {
            let mut index = 0;
            for _ in 0..=depth {
                tree.nodes[index].latest += 1;
                if index * 2 + 1 >= tree.nodes.len() {
                    break;
                }
                let node = tree.nodes[index];
                index = if point[node.dimension] < node.split {
                    2 * index + 1
                } else {
                    2 * index + 2
                };
            }
        }
    }

    fn swap(&mut self) {
        for tree in &mut self.trees {
            for node in &mut tree.nodes {
                node.reference = node.latest;
                node.latest = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusual_combination_scores_higher_than_usual_ones() {
        let mut detector = HalfSpaceTrees::new(2, 25, 8, 250);
        // Temperature and humidity move together: warm is dry, cool is humid.
        let point = |i: usize| {
            let t = 20.0 + (i % 50) as f64 * 0.1;
            [t, 80.0 - 2.0 * (t - 20.0) + ((i * 7919) % 7) as f64 * 0.05]
        };
        let mut usual = 0.0;
        for i in 0..1000 {
            if let Some(score) = detector.update(i as i64, &point(i)) {
                usual = score;
            }
        }
        // Warm and humid at once: each value seen before, never together.
        let odd = detector.update(1000, &[24.5, 79.0]).unwrap();
        assert!(odd > usual * 2.0, "odd {odd} vs usual {usual}");
    }
}
