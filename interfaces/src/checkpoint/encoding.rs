//! How parts are written: in key order, so that unchanged state makes unchanged chunks, and
//! routed by the rule timely's exchange follows, so that state restored into another worker
//! count lands where its keys' rows arrive.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Whether a key whose routing hash is `hash` belongs to `worker` of `peers`: the rule timely's
/// exchange follows, so keyed state restored into another worker count lands where the key's
/// rows will arrive.
pub fn routed_to(hash: u64, worker: usize, peers: usize) -> bool {
    (hash % peers as u64) as usize == worker
}

/// A map's entries in key order, borrowed, for a part: they serialize as the owned entries a
/// part reads back (`Vec<(K, V)>`).
///
/// Hash maps list their entries in an order that changes as they grow and between runs; a part
/// written in key order changes only where its state did, so the chunks of a large, mostly
/// unchanged state (a table, an alarm's instances) are stored once, not at every checkpoint.
/// Borrowed, not cloned: a part of 100,000 detectors would otherwise hold the state twice, and
/// its bytes a third time, while it is written.
pub fn in_key_order<'a, K, V>(
    entries: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> Vec<(&'a K, &'a V)>
where
    K: Ord + 'a,
    V: 'a,
{
    let mut ordered: Vec<(&K, &V)> = entries.into_iter().collect();
    ordered.sort_unstable_by(|a, b| a.0.cmp(b.0));
    ordered
}

/// A hash map that serializes its entries in key order, for the same reason as [`in_key_order`];
/// it reads back as the map it was.
pub struct InKeyOrder<'a, K, V, H>(pub &'a HashMap<K, V, H>);

impl<K: Ord + Serialize, V: Serialize, H> Serialize for InKeyOrder<'_, K, V, H> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entries: Vec<(&K, &V)> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_map(entries)
    }
}

/// For `#[serde(serialize_with = "…")]` on a hash map field: see [`InKeyOrder`].
pub fn serialize_in_key_order<K, V, H, S>(
    map: &HashMap<K, V, H>,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    K: Ord + Serialize,
    V: Serialize,
    S: serde::Serializer,
{
    InKeyOrder(map).serialize(serializer)
}

/// Encodes a part (compact binary; parts are read back by the same build of the engine).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("checkpoint state serializes")
}

/// Decodes a part; the error names what could not be read.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes)
        .map_err(|error| format!("cannot read the checkpointed {what}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_holding_the_same_entries_encode_the_same_whatever_their_history() {
        // One map grew past several resizes and lost most of its entries; the other was
        // filled once with what remains. Their own orders differ; their parts must not.
        let mut grown: HashMap<u64, u64> = (0..10_000).map(|k| (k, k * 2)).collect();
        grown.retain(|k, _| k % 97 == 0);
        let mut fresh: HashMap<u64, u64> = HashMap::new();
        for k in (0..10_000).rev().filter(|k| k % 97 == 0) {
            fresh.insert(k, k * 2);
        }
        assert_eq!(encode(&in_key_order(&grown)), encode(&in_key_order(&fresh)));
        // Borrowed entries read back as the owned ones, in key order.
        let owned: Vec<(u64, u64)> = decode("map", &encode(&in_key_order(&grown))).unwrap();
        let mut expected: Vec<(u64, u64)> = grown.iter().map(|(k, v)| (*k, *v)).collect();
        expected.sort();
        assert_eq!(owned, expected);
        assert_eq!(encode(&InKeyOrder(&grown)), encode(&InKeyOrder(&fresh)));
        // And a part in key order reads back as the map.
        let read: HashMap<u64, u64> = decode("map", &encode(&InKeyOrder(&grown))).unwrap();
        assert_eq!(read, grown);
    }
}
