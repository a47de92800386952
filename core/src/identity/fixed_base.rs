//! Multiplication of a fixed point by public scalars, from a table of its multiples: what a key that
//! signs often buys for the verification of its signatures (see `Did::verify`).
//!
//! With digits in radix 2^W, `[x]P` is one table addition per digit (52 for W = 5, 38 for W = 7)
//! and W doublings, where a double-base multiplication spends about 253 doublings. Variable time,
//! since nothing here is secret (verification's scalars and points are public), so a digit picks
//! its entry directly instead of scanning the row in constant time as curve25519-dalek's
//! `EdwardsBasepointTable` must for signing. That scan is a third of a multiplication from
//! dalek's table, and it is only fast where the compiler vectorises it (not in the phone's
//! size-optimised library); these additions are the same in every build.
//!
//! Measured here, one multiplication: W = 4 10.5 µs (41 KiB), 5 8.9 µs (67 KiB), 6 7.9 µs
//! (110 KiB), 7 7.3 µs (190 KiB). A key's table is W = 5; the base point's, one per process, 7.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;

/// A signing key's table (67 KiB).
pub(crate) type KeyTable = FixedBase<5>;

/// Multiples of a point P for digits in radix 2^W: row i holds `j·2^(2Wi)·P` for j in 1..=2^(W−1);
/// a row serves two digit positions, 2i directly and 2i+1 through one multiplication by 2^W.
pub(crate) struct FixedBase<const W: usize> {
    /// Row after row, `2^(W−1)` points each.
    points: Box<[EdwardsPoint]>,
}

impl<const W: usize> FixedBase<W> {
    /// Digits of a reduced scalar (below 2^253): `⌈253 / W⌉`, and one for the last carry.
    const DIGITS: usize = 253usize.div_ceil(W) + 1;
    const ROWS: usize = Self::DIGITS.div_ceil(2);
    const ROW: usize = 1 << (W - 1);

    pub(crate) fn new(point: &EdwardsPoint) -> Self {
        let mut points = Vec::with_capacity(Self::ROWS * Self::ROW);
        let mut base = *point;
        for _ in 0..Self::ROWS {
            let mut multiple = base;
            points.push(multiple);
            for _ in 1..Self::ROW {
                multiple += base;
                points.push(multiple);
            }
            base = times_2_to_the(base, 2 * W);
        }
        Self { points: points.into_boxed_slice() }
    }

    /// `[x]P` for a reduced x. Writing x = Σ d_i·2^(Wi) with signed digits d_i in [−2^(W−1), 2^(W−1)),
    /// the odd digits are summed first and multiplied by 2^W, then the even ones added: entry
    /// `|d|` of row i/2, negated for a negative digit.
    pub(crate) fn mul(&self, x: &Scalar) -> EdwardsPoint {
        let digits = signed_digits::<W>(x);
        let mut sum = EdwardsPoint::identity();
        for i in (1..Self::DIGITS).step_by(2) {
            sum = self.add_digit(sum, i, digits[i]);
        }
        sum = times_2_to_the(sum, W);
        for i in (0..Self::DIGITS).step_by(2) {
            sum = self.add_digit(sum, i, digits[i]);
        }
        sum
    }

    fn add_digit(&self, sum: EdwardsPoint, i: usize, digit: i8) -> EdwardsPoint {
        let row = &self.points[(i / 2) * Self::ROW..][..Self::ROW];
        match digit {
            0 => sum,
            d if d > 0 => sum + row[d as usize - 1],
            d => sum - row[d.unsigned_abs() as usize - 1],
        }
    }
}

/// `2^n·P`: threes of doublings (curve25519-dalek's multiplication by the cofactor 8, its only
/// public doubling), then additions of the point to itself.
fn times_2_to_the(mut point: EdwardsPoint, mut n: usize) -> EdwardsPoint {
    while n >= 3 {
        point = point.mul_by_cofactor();
        n -= 3;
    }
    for _ in 0..n {
        point += point;
    }
    point
}

/// The table of the curve's base point B, built on first use (190 KiB).
pub(crate) fn base_point() -> &'static FixedBase<7> {
    static TABLE: std::sync::OnceLock<FixedBase<7>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| FixedBase::new(&curve25519_dalek::constants::ED25519_BASEPOINT_POINT))
}

/// x's digits in radix 2^W (W ≤ 8), each in [−2^(W−1), 2^(W−1)) except the last, which takes the
/// final carry: x is reduced (below 2^253), so the last digit is at most 1.
fn signed_digits<const W: usize>(x: &Scalar) -> Vec<i8> {
    let bytes = x.as_bytes();
    debug_assert!(bytes[31] < 0x20, "a reduced scalar");
    let byte = |i: usize| u16::from(bytes.get(i).copied().unwrap_or(0));
    let count = FixedBase::<W>::DIGITS;
    // A digit's W bits lie within two bytes.
    let mut digits: Vec<i16> = (0..count)
        .map(|d| {
            let at = d * W;
            let two = byte(at / 8) | byte(at / 8 + 1) << 8;
            ((two >> (at % 8)) & ((1 << W) - 1)) as i16
        })
        .collect();
    let half = 1i16 << (W - 1);
    for i in 0..count - 1 {
        let carry = (digits[i] + half) >> W;
        digits[i] -= carry << W;
        digits[i + 1] += carry;
    }
    digits.into_iter().map(|d| d as i8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;

    fn scalars() -> Vec<Scalar> {
        let mut scalars =
            vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(16u64), Scalar::from(0x90u64)];
        // Every nibble 8 (carries all the way up), every nibble 7, and a spread of others.
        scalars.push(Scalar::from_bytes_mod_order([0x88; 32]));
        scalars.push(Scalar::from_bytes_mod_order([0x77; 32]));
        scalars.push(Scalar::from_bytes_mod_order([0xff; 32]));
        scalars.extend(
            (0..100u64).map(|n| {
                Scalar::from_bytes_mod_order_wide(&[(n * 37 % 251) as u8; 64]) * Scalar::from(n + 1)
            }),
        );
        scalars
    }

    fn table_multiplication_is_scalar_multiplication<const W: usize>() {
        let point = ED25519_BASEPOINT_POINT * Scalar::from(0x1234_5678_9abc_def0u64);
        let table = FixedBase::<W>::new(&point);
        for x in scalars() {
            assert_eq!(table.mul(&x), point * x, "W = {W}, {x:?}");
        }
    }

    #[test]
    fn table_multiplication_is_scalar_multiplication_at_every_width_used() {
        table_multiplication_is_scalar_multiplication::<4>();
        table_multiplication_is_scalar_multiplication::<5>();
        table_multiplication_is_scalar_multiplication::<7>();
        for x in scalars() {
            assert_eq!(base_point().mul(&x), ED25519_BASEPOINT_POINT * x, "{x:?}");
        }
    }

    fn digits_add_up<const W: usize>() {
        let radix = Scalar::from(1u64 << W);
        let half = 1i8 << (W - 1);
        for x in scalars() {
            let digits = signed_digits::<W>(&x);
            let (last, rest) = digits.split_last().expect("digits");
            assert!(rest.iter().all(|d| (-half..half).contains(d)), "W = {W}: {digits:?}");
            assert!((0..=1).contains(last), "W = {W}: {digits:?}");
            let signed = digits.iter().rev().fold(Scalar::ZERO, |acc, &d| {
                let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
                acc * radix + if d < 0 { -magnitude } else { magnitude }
            });
            assert_eq!(signed, x, "W = {W}");
        }
    }

    #[test]
    fn signed_digits_add_up_to_the_scalar() {
        digits_add_up::<4>();
        digits_add_up::<5>();
        digits_add_up::<7>();
    }
}
