//! A fast keyed hasher for the cache's fixed-size keys (lease keys, link addresses, DUIDs).
//!
//! SipHash (std's default) costs more than the rest of a lookup for a 17-byte key. This is the
//! folded-multiply construction used by foldhash/ahash's fallback: a per-process random seed, each
//! 64-bit word mixed by a 64×64→128-bit multiply folded back to 64 bits. Keys come from the
//! network, so the seed is random per process (an attacker cannot precompute collisions offline);
//! it is not a cryptographic PRF, which is acceptable for keys that are our own subscribers'
//! addresses and DUIDs and that the merge rules bound per client.

use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyHasher`]s sharing one random seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHashBuilder {
    seed: u64,
}

impl Default for KeyHashBuilder {
    fn default() -> Self {
        KeyHashBuilder {
            seed: rand::random::<u64>() | 1,
        }
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { state: self.seed }
    }
}

/// The hasher state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    state: u64,
}

impl KeyHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.state = fold(self.state ^ w, K);
    }
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state, K ^ 0x2d35_8dcc_aa6c_78a5)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.mix(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(a) ^ ((bytes.len() as u64) << 56));
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn h<T: Hash>(b: &KeyHashBuilder, v: T) -> u64 {
        b.hash_one(v)
    }

    #[test]
    fn equal_inputs_hash_equal_and_neighbours_spread() {
        let b = KeyHashBuilder::default();
        assert_eq!(h(&b, 42u128), h(&b, 42u128));
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u128 {
            // Low bits of consecutive keys must differ (hashbrown uses the low bits).
            seen.insert(h(&b, i) & 0xffff);
        }
        assert!(seen.len() > 8_000, "poor spread: {}", seen.len());
        let other = KeyHashBuilder::default();
        assert_ne!(h(&b, 7u128), h(&other, 7u128), "seeds differ per builder");
    }
}
