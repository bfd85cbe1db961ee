//! Point id -> shard routing, stable across restarts, machines and versions.
//!
//! `shard_of(id, n)`: FNV-1a (64-bit) over the id's canonical bytes (integer ids: 8 bytes
//! little-endian; UUIDs: their 16 bytes) finished with murmur3's fmix64, then jump consistent
//! hashing (Lamping & Veach,
//! 2014) into `n` buckets. Jump hashing moves only ~1/(n+1) of the ids when a shard is
//! added. Changing this function would misroute every existing point: it is part of the
//! on-disk contract (docs/cluster.md).

use crate::types::PointId;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // murmur3 fmix64: FNV alone barely changes the high bits for small integers
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Jump consistent hash of `key` into `buckets` (>= 1) buckets.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The shard (0-based) that owns `id` in a collection of `shard_number` shards.
pub fn shard_of(id: PointId, shard_number: u32) -> u32 {
    let h = match id {
        PointId::Num(n) => fnv1a(&n.to_le_bytes()),
        PointId::Uuid(u) => fnv1a(u.as_bytes()),
    };
    jump_hash(h, shard_number.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // Pinned: these must never change (they decide where stored points live).
        let got: Vec<u32> = (0..8).map(|i| shard_of(PointId::Num(i), 6)).collect();
        assert_eq!(
            got,
            PINNED.to_vec(),
            "routing changed: existing clusters would misroute points"
        );
        assert_eq!(shard_of(PointId::Num(42), 1), 0);
    }
    const PINNED: [u32; 8] = [5, 2, 3, 1, 0, 1, 3, 2];

    #[test]
    fn balanced_and_consistent() {
        let n = 60_000u64;
        let mut counts = [0u32; 6];
        let mut moved = 0;
        for i in 0..n {
            let s6 = shard_of(PointId::Num(i), 6);
            counts[s6 as usize] += 1;
            if shard_of(PointId::Num(i), 7) != s6 {
                moved += 1;
            }
        }
        for c in counts {
            assert!(
                (c as f64 - n as f64 / 6.0).abs() < n as f64 / 6.0 * 0.05,
                "{counts:?}"
            );
        }
        // going from 6 to 7 shards moves about 1/7 of the points
        assert!(
            (moved as f64 / n as f64 - 1.0 / 7.0).abs() < 0.02,
            "moved {moved}"
        );
    }
}
