//! A small deterministic pseudo-random number generator.

/// The SplitMix64 generator (Steele, Lea and Flood, 2014), as used to seed xoshiro.
///
/// It is small, fast, passes BigCrush, and — the reason it is here — its output
/// is fixed by this file rather than by a third-party crate's version, so sample
/// permutations, validation splits, augmentation draws and synthetic images stay
/// identical across dependency upgrades. It is not cryptographic.
///
/// ```
/// use camshaft_data::SplitMix64;
/// let mut rng = SplitMix64::new(42);
/// let die = rng.below(6);
/// assert!(die < 6);
/// let mut again = SplitMix64::new(42);
/// assert_eq!(again.below(6), die);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator whose first output is `mix64(seed + golden gamma)`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator for one stream identified by `keys` under `seed`, e.g.
    /// `(seed, [epoch])` for an epoch's permutation or `(seed, [split, index])`
    /// for one sample. Different keys give statistically independent streams.
    pub fn from_keys(seed: u64, keys: &[u64]) -> Self {
        let mut state = mix64(seed.wrapping_add(GOLDEN_GAMMA));
        for &key in keys {
            state = mix64(state ^ mix64(key.wrapping_add(GOLDEN_GAMMA)));
        }
        SplitMix64 { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A uniform float in `[0, 1)` with 24 bits of precision.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[low, high)`.
    pub fn range_f32(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_f32()
    }

    /// A uniform integer in `[0, n)`, without modulo bias (Lemire's method).
    /// Returns 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.next_f32() < p
    }

    /// Shuffles `items` in place (Fisher–Yates, from the back).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_sequence() {
        // Reference values of the C implementation seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = SplitMix64::new(7);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            let v = rng.below(6);
            assert!(v < 6);
            counts[v] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "counts {counts:?}");
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn floats_are_in_the_unit_interval() {
        let mut rng = SplitMix64::new(1);
        let mut sum = 0.0f64;
        for _ in 0..10_000 {
            let f = rng.next_f32();
            assert!((0.0..1.0).contains(&f));
            let d = rng.next_f64();
            assert!((0.0..1.0).contains(&d));
            sum += d;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }

    #[test]
    fn permutation_is_a_permutation_and_depends_on_the_seed() {
        let a = SplitMix64::new(3).permutation(100);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        assert_ne!(a, SplitMix64::new(4).permutation(100));
        assert_eq!(a, SplitMix64::new(3).permutation(100));
    }

    #[test]
    fn keyed_streams_differ() {
        let a = SplitMix64::from_keys(1, &[0, 5]).next_u64();
        let b = SplitMix64::from_keys(1, &[0, 6]).next_u64();
        let c = SplitMix64::from_keys(1, &[1, 5]).next_u64();
        let d = SplitMix64::from_keys(2, &[0, 5]).next_u64();
        assert!(a != b && a != c && a != d && b != c);
        assert_eq!(a, SplitMix64::from_keys(1, &[0, 5]).next_u64());
    }
}
