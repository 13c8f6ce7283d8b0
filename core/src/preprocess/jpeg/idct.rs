//! libjpeg-turbo's "islow" integer inverse DCT (`jidctint.c`): 13-bit fixed-point
//! constants, a column pass keeping 2 extra bits, a row pass descaling with rounding,
//! and libjpeg's post-IDCT range-limit table.

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline]
fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's post-IDCT range limit: `(x & 1023)` indexes a table that is `x + 128`
/// clamped to 0..=255 for -512 <= x < 512 (and wraps beyond, like libjpeg).
#[inline]
fn idct_limit(x: i64) -> u8 {
    let i = (x as i32 & 1023) as usize;
    match i {
        0..=127 => (i + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        _ => (i - 896) as u8,
    }
}

/// The even/odd butterfly shared by both passes; returns the eight outputs before
/// descaling (`out[i]` for position `i`).
#[inline]
fn idct_1d(v: [i64; 8], dc_shifted: (i64, i64)) -> [i64; 8] {
    // Even part.
    let (z2, z3) = (v[2], v[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let (tmp0, tmp1) = dc_shifted;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    // Odd part.
    let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Inverse DCT of one block into an 8x8 window of `out` (row stride `stride`).
pub(super) fn idct_islow(coefs: &[i16], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut ws = [0i32; 64];
    // Pass 1: columns, results scaled up by 2^PASS1_BITS.
    for col in 0..8 {
        let dq = |row: usize| i64::from(coefs[row * 8 + col]) * i64::from(quant[row * 8 + col]);
        if (1..8).all(|row| coefs[row * 8 + col] == 0) {
            let dc = (dq(0) << PASS1_BITS) as i32;
            for row in 0..8 {
                ws[row * 8 + col] = dc;
            }
            continue;
        }
        let v = [dq(0), dq(1), dq(2), dq(3), dq(4), dq(5), dq(6), dq(7)];
        let shifted = ((v[0] + v[4]) << CONST_BITS, (v[0] - v[4]) << CONST_BITS);
        let o = idct_1d(v, shifted);
        for row in 0..8 {
            ws[row * 8 + col] = descale(o[row], CONST_BITS - PASS1_BITS) as i32;
        }
    }
    // Pass 2: rows, descaled by the DCT's factor 8 and PASS1_BITS, range-limited.
    for row in 0..8 {
        let w = &ws[row * 8..row * 8 + 8];
        let dst = &mut out[row * stride..row * stride + 8];
        if w[1..].iter().all(|&x| x == 0) {
            let v = idct_limit(descale(i64::from(w[0]), PASS1_BITS + 3));
            dst.fill(v);
            continue;
        }
        let v: [i64; 8] = std::array::from_fn(|i| i64::from(w[i]));
        let shifted = ((v[0] + v[4]) << CONST_BITS, (v[0] - v[4]) << CONST_BITS);
        let o = idct_1d(v, shifted);
        for (d, x) in dst.iter_mut().zip(o) {
            *d = idct_limit(descale(x, CONST_BITS + PASS1_BITS + 3));
        }
    }
}
