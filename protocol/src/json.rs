//! JSON written exactly as JavaScript's `JSON.stringify` writes it.
//!
//! Socket.IO payloads are JSON produced by `JSON.stringify` on the reference
//! implementation. `serde_json` already matches it for strings (same escapes,
//! lowercase `\u00xx`), integers and compact separators; it differs for
//! floating-point numbers (`1.0` vs `1`, `1e21` vs `1e+21`). [`JsFormatter`]
//! closes that gap, so a packet we decode and encode again is byte-identical
//! to what the reference server would send.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// A `serde_json` formatter that writes numbers as `Number.prototype.toString`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsFormatter;

impl Formatter for JsFormatter {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write_js_number(writer, value)
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        write_js_number(writer, f64::from(value))
    }

    // Everything else is what `CompactFormatter` does; spelled out through it so a
    // future serde_json default cannot drift from compact output.
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        CompactFormatter.begin_array_value(writer, first)
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        CompactFormatter.begin_object_key(writer, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        CompactFormatter.begin_object_value(writer)
    }
}

/// Appends `value` as `JSON.stringify(value)` would write it.
pub fn write_to<T: ?Sized + Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, JsFormatter);
    value.serialize(&mut ser)
}

/// How many decimal digits `n` has.
pub fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Appends `n` in decimal, without the formatting machinery (hot paths: the
/// open packet, every event's offset).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `JSON.stringify(value)` as a `String`.
pub fn to_string<T: ?Sized + Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(64);
    write_to(&mut out, value)?;
    // serde_json only ever writes UTF-8.
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// `String(value)`: a number as JavaScript turns it into a string — what a
/// number used as an object key or a room name becomes. Unlike JSON, `NaN`,
/// `Infinity` and `-Infinity` are spelled out.
pub fn number_to_string(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let mut out = Vec::with_capacity(24);
    // Writing into a `Vec` cannot fail, and every byte written is ASCII.
    let _ = write_js_number(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

/// Writes a finite `f64` as ECMAScript `Number::toString` (ECMA-262 §6.1.6.1.20).
///
/// JSON cannot hold NaN or infinities; like `JSON.stringify` they become `null`.
fn write_js_number<W: ?Sized + io::Write>(w: &mut W, value: f64) -> io::Result<()> {
    if !value.is_finite() {
        return w.write_all(b"null");
    }
    if value == 0.0 {
        // Covers -0 as well: JavaScript prints it as "0".
        return w.write_all(b"0");
    }
    if value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0 {
        // Up to 2^53 every integer is a double, so the shortest digits that
        // read back are the exact integer: `{:.0}` prints it. Above, JavaScript
        // pads the shortest digits with zeros (2^64 is "18446744073709552000"),
        // which the general path below does.
        return write!(w, "{value:.0}");
    }
    // Shortest round-trip digits, in scientific form: "d[.ddd]e[-]x".
    let sci = format!("{:e}", value.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n = exp + 1; // value = 0.d1d2..dk × 10^n
    if value < 0.0 {
        w.write_all(b"-")?;
    }
    if k <= n && n <= 21 {
        w.write_all(digits.as_bytes())?;
        for _ in 0..(n - k) {
            w.write_all(b"0")?;
        }
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        write!(w, "{int}.{frac}")?;
    } else if -6 < n && n <= 0 {
        w.write_all(b"0.")?;
        for _ in 0..(-n) {
            w.write_all(b"0")?;
        }
        w.write_all(digits.as_bytes())?;
    } else {
        let (first, rest) = digits.split_at(1);
        w.write_all(first.as_bytes())?;
        if !rest.is_empty() {
            write!(w, ".{rest}")?;
        }
        let e = n - 1;
        write!(w, "e{}{}", if e < 0 { '-' } else { '+' }, e.abs())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(v: f64) -> String {
        let mut out = Vec::new();
        write_js_number(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decimals_as_display_prints_them() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, 1 << 53, u64::MAX - 1, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
            assert_eq!(decimal_len(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn numbers_print_as_javascript_does() {
        // Each pair is (value, String(value)) as node prints it.
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.0, "-1"),
            (-0.0, "0"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (1e-6, "0.000001"),
            (1.5e-6, "0.0000015"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (9007199254740993.0, "9007199254740992"),
            (9007199254740994.0, "9007199254740994"),
            (1152921504606846976.0, "1152921504606847000"),
            (18446744073709551616.0, "18446744073709552000"),
            (-18446744073709551616.0, "-18446744073709552000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1180591620717411303424.0, "1.1805916207174113e+21"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (0.000123, "0.000123"),
            (12345678.9, "12345678.9"),
        ];
        for (v, want) in cases {
            assert_eq!(num(*v), *want, "value {v:e}");
        }
    }

    #[test]
    fn strings_of_numbers_as_javascript_writes_them() {
        for (v, want) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (-0.0, "0"),
            (42.0, "42"),
            (1.5e-7, "1.5e-7"),
            (1e21, "1e+21"),
            (18446744073709551616.0, "18446744073709552000"),
        ] {
            assert_eq!(number_to_string(v), want, "{v:e}");
        }
    }

    #[test]
    fn values_match_json_stringify() {
        let v = json!({"b": 1, "a": [1.0, "x\u{1f}\n\"\\/", null, true], "c": {"d": 2.5}});
        // preserve_order keeps insertion order, as JavaScript objects do.
        assert_eq!(to_string(&v).unwrap(), r#"{"b":1,"a":[1,"x\u001f\n\"\\/",null,true],"c":{"d":2.5}}"#);
    }

    #[test]
    fn parsed_floats_that_are_integers_print_as_integers() {
        let v: serde_json::Value = serde_json::from_str("[1.0, 2.50, 1E3, -0.0]").unwrap();
        assert_eq!(to_string(&v).unwrap(), "[1,2.5,1000,0]");
    }

    #[test]
    fn parsed_floats_reencode_to_the_same_digits() {
        // Shortest round-trip digits that serde_json's default (not correctly
        // rounded) parser reads 1 ULP off; found by the round-trip proptests.
        let json = "[3.7230486550230314e-60,4.7307900944302846e+198]";
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v[0].as_f64(), Some(3.7230486550230314e-60));
        assert_eq!(v[1].as_f64(), Some(4.7307900944302846e198));
        assert_eq!(to_string(&v).unwrap(), json);
    }
}
