//! Calendar dates as JavaScript's `Date` writes them: day numbers to
//! proleptic Gregorian dates, and `Date.prototype.toISOString`.
//!
//! One copy of the rule for the whole project: the server's event timestamps
//! and the Redis adapter codec's msgpack dates both go through
//! [`civil_from_days`].

/// Milliseconds per day.
const DAY_MS: i64 = 86_400_000;

/// The largest magnitude of a JavaScript time value, in milliseconds since the
/// epoch (ECMA-262 "Time Values and Time Range": ±100,000,000 days).
pub const MAX_TIME_MS: f64 = 8.64e15;

/// Days since 1970-01-01 (negative before) → year, month (1..=12) and day
/// (1..=31) in the proleptic Gregorian calendar (Howard Hinnant's algorithm:
/// days since 0000-03-01, in 400-year eras of 146 097 days).
///
/// Defined for every `i64`: the arithmetic is done in `i128`, so no input
/// overflows, and every year it yields fits in an `i64`.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    // |year| < 2^64 / 365 and month, day are small: the casts are exact.
    (year as i64, month as i64, day as i64)
}

/// `new Date(ms).toISOString()`: `"2024-01-02T03:04:05.678Z"`, with a signed
/// six-digit year outside 0000..=9999 (`"-000001-01-01T00:00:00.000Z"`,
/// `"+275760-09-13T00:00:00.000Z"`). The fraction of a millisecond is dropped
/// (toward zero, as `TimeClip` does).
///
/// `None` when `ms` is not a valid JavaScript time value (not finite, or beyond
/// [`MAX_TIME_MS`]): such a `Date` is invalid, its `toJSON()` is `null`.
pub fn iso_string(ms: f64) -> Option<String> {
    if !ms.is_finite() || ms.trunc().abs() > MAX_TIME_MS {
        return None;
    }
    // Within ±8.64e15 after truncation: exact in an i64.
    let t = ms.trunc() as i64;
    let days = t.div_euclid(DAY_MS);
    let rem = t.rem_euclid(DAY_MS);
    let (y, mo, d) = civil_from_days(days);
    let year = if (0..=9999).contains(&y) {
        format!("{y:04}")
    } else if y < 0 {
        format!("-{:06}", y.unsigned_abs())
    } else {
        format!("+{y:06}")
    };
    Some(format!(
        "{year}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(-719_469), (0, 2, 29));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
        // The ends of the JavaScript Date range.
        assert_eq!(civil_from_days(100_000_000), (275_760, 9, 13));
        assert_eq!(civil_from_days(-100_000_000), (-271_821, 4, 20));
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        // Walk day by day from 1600-01-01 to 2400-12-31 with a naive calendar.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = |y: i64, m: i64| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let start = -135_140; // 1600-01-01
        let (mut y, mut m, mut d) = (1600, 1, 1);
        assert_eq!(civil_from_days(start), (y, m, d));
        for days in start + 1..start + 801 * 366 {
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        }
    }

    #[test]
    fn extreme_days_do_not_overflow() {
        for days in [i64::MIN, i64::MIN + 1, i64::MAX - 719_468, i64::MAX] {
            let (_, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d), "{days}");
        }
    }

    #[test]
    fn iso_strings_as_javascript_writes_them() {
        assert_eq!(iso_string(0.0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(iso_string(-1.0).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(iso_string(1_704_164_645_678.0).as_deref(), Some("2024-01-02T03:04:05.678Z"));
        assert_eq!(iso_string(1e12).as_deref(), Some("2001-09-09T01:46:40.000Z"));
        assert_eq!(iso_string(0.9).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(iso_string(-0.9).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(iso_string(-62_198_755_200_000.0).as_deref(), Some("-000001-01-01T00:00:00.000Z"));
        assert_eq!(iso_string(253_402_300_800_000.0).as_deref(), Some("+010000-01-01T00:00:00.000Z"));
        assert_eq!(iso_string(MAX_TIME_MS).as_deref(), Some("+275760-09-13T00:00:00.000Z"));
        assert_eq!(iso_string(-MAX_TIME_MS).as_deref(), Some("-271821-04-20T00:00:00.000Z"));
        assert_eq!(iso_string(MAX_TIME_MS + 1.0), None);
        assert_eq!(iso_string(f64::NAN), None);
        assert_eq!(iso_string(f64::INFINITY), None);
    }
}
