//! Multiplication of a fixed point by public scalars, from a table of its multiples: what a key that
//! signs often buys for the verification of its signatures (see `Did::verify`).
//!
//! `[x]P` is 64 table additions, three doublings and one more addition, where a double-base multiplication spends about
//! 253 doublings. Variable time, since nothing here is secret (verification's scalars and points
//! are public), so a digit picks its entry directly instead of scanning the row in constant time as
//! curve25519-dalek's `EdwardsBasepointTable` must for signing. That scan is a third of a
//! multiplication from dalek's table, and it is only fast where the compiler vectorises it (not in
//! the phone's size-optimised library); these additions are the same in every build.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;

/// `rows[i][j] = (j + 1)·256^i·P`: 32 rows of 8 points, 40 KiB.
pub(crate) struct FixedBase {
    rows: Box<[[EdwardsPoint; 8]; 32]>,
}

impl FixedBase {
    pub(crate) fn new(point: &EdwardsPoint) -> Self {
        let mut rows = Box::new([[EdwardsPoint::identity(); 8]; 32]);
        let mut base = *point;
        for row in rows.iter_mut() {
            row[0] = base;
            for j in 1..8 {
                row[j] = row[j - 1] + base;
            }
            // 256·base: ×8 twice, then doubled twice.
            let times_64 = base.mul_by_cofactor().mul_by_cofactor();
            let times_128 = times_64 + times_64;
            base = times_128 + times_128;
        }
        Self { rows }
    }

    /// `[x]P`. Writing x = Σ d_i·16^i with signed digits d_i in [−8, 8), the odd digits are summed
    /// first and multiplied by 16, then the even ones added: entry `|d|` of row i/2, negated for a
    /// negative digit.
    pub(crate) fn mul(&self, x: &Scalar) -> EdwardsPoint {
        let digits = signed_radix_16(x);
        let mut sum = EdwardsPoint::identity();
        for i in (1..64).step_by(2) {
            sum = self.add_digit(sum, i, digits[i]);
        }
        let times_8 = sum.mul_by_cofactor();
        sum = times_8 + times_8;
        for i in (0..64).step_by(2) {
            sum = self.add_digit(sum, i, digits[i]);
        }
        sum
    }

    fn add_digit(&self, sum: EdwardsPoint, i: usize, digit: i8) -> EdwardsPoint {
        let row = &self.rows[i / 2];
        match digit {
            0 => sum,
            d if d > 0 => sum + row[d as usize - 1],
            d => sum - row[d.unsigned_abs() as usize - 1],
        }
    }
}

/// The table of the curve's base point B, built on first use.
pub(crate) fn base_point() -> &'static FixedBase {
    static TABLE: std::sync::OnceLock<FixedBase> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| FixedBase::new(&curve25519_dalek::constants::ED25519_BASEPOINT_POINT))
}

/// x's 64 digits in radix 16, each in [−8, 8) except the last, which takes the final carry: x is
/// reduced (below 2^253), so its last digit is at most 1 and with the carry at most 2.
fn signed_radix_16(x: &Scalar) -> [i8; 64] {
    let bytes = x.as_bytes();
    debug_assert!(bytes[31] < 0x20, "a reduced scalar");
    let mut digits = [0i8; 64];
    for (i, byte) in bytes.iter().enumerate() {
        digits[2 * i] = (byte & 15) as i8;
        digits[2 * i + 1] = (byte >> 4) as i8;
    }
    for i in 0..63 {
        let carry = (digits[i] + 8) >> 4;
        digits[i] -= carry << 4;
        digits[i + 1] += carry;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;

    #[test]
    fn table_multiplication_is_scalar_multiplication() {
        let point = ED25519_BASEPOINT_POINT * Scalar::from(0x1234_5678_9abc_def0u64);
        let table = FixedBase::new(&point);
        let mut scalars =
            vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(8u64), Scalar::from(0x88u64)];
        // Every nibble 8 (the most carries) and every nibble 7 (none), and a spread of others.
        scalars.push(Scalar::from_bytes_mod_order([0x88; 32]));
        scalars.push(Scalar::from_bytes_mod_order([0x77; 32]));
        scalars.extend(
            (0..200u64).map(|n| {
                Scalar::from_bytes_mod_order_wide(&[(n * 37 % 251) as u8; 64]) * Scalar::from(n + 1)
            }),
        );
        for x in scalars {
            assert_eq!(table.mul(&x), point * x, "{x:?}");
            assert_eq!(base_point().mul(&x), ED25519_BASEPOINT_POINT * x, "{x:?}");
        }
    }

    #[test]
    fn signed_digits_add_up_to_the_scalar() {
        for x in [-Scalar::ONE, Scalar::from_bytes_mod_order([0x88; 32]), Scalar::from(12345u64)] {
            let digits = signed_radix_16(&x);
            assert!(digits[..63].iter().all(|d| (-8..8).contains(d)), "{digits:?}");
            assert!((0..=2).contains(&digits[63]));
            let sum = digits.iter().rev().fold(Scalar::ZERO, |acc, &d| {
                acc * Scalar::from(16u64)
                    + if d < 0 { -Scalar::from(d.unsigned_abs() as u64) } else { Scalar::from(d as u64) }
            });
            assert_eq!(sum, x);
        }
    }
}
