//! FNV-1a, 64 bit, plus a finalizer. Small, stable across versions and platforms (names and
//! lease offsets derived from it must not change between agent releases), and good enough for
//! short-name derivation. Not a cryptographic hash: names are not secrets.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a hasher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    pub(crate) fn new() -> Self {
        Self(OFFSET_BASIS)
    }

    pub(crate) fn write(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// The raw FNV-1a state passed through murmur3's fmix64. FNV's high bits mix poorly for
    /// inputs that differ only in their last byte ("c-1", "c-2"), and names are taken from the
    /// high bits; fmix64 is a bijection, so it adds no collisions.
    pub(crate) fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

/// FNV-1a as a [`std::hash::Hasher`]: a flow's content hash (its cookie), the same on every
/// run of the same agent, unlike the randomly keyed default hasher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FnvHasher(Fnv1a);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(Fnv1a::new())
    }
}

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = self.0.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Hash of one byte string.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    Fnv1a::new().write(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_fnv1a_matches_reference_vectors() {
        // Reference values from the FNV specification's test suite.
        assert_eq!(Fnv1a::new().0, 0xcbf2_9ce4_8422_2325);
        assert_eq!(Fnv1a::new().write(b"a").0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Fnv1a::new().write(b"foobar").0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let a = Fnv1a::new().write(b"foo").write(b"bar").finish();
        assert_eq!(a, hash(b"foobar"));
        assert_ne!(hash(b"c-1"), hash(b"c-2"));
    }
}
