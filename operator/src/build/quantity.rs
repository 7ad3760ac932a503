//! Kubernetes quantities (`500Gi`, `1.5T`, `1e9`) as whole bytes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Bytes of a quantity; fractions of a byte round up. Errors on negative, malformed or too large.
pub fn to_bytes(q: &Quantity) -> Result<u64, String> {
    let s = q.0.trim();
    let (number, multiplier): (&str, f64) = if let Some(pos) = s.find(['e', 'E']) {
        let exp: i32 = s[pos + 1..]
            .parse()
            .map_err(|_| format!("{s:?} is not a quantity"))?;
        (&s[..pos], 10f64.powi(exp))
    } else {
        let suffixes: [(&str, f64); 13] = [
            ("Ki", 1024f64),
            ("Mi", 1024f64.powi(2)),
            ("Gi", 1024f64.powi(3)),
            ("Ti", 1024f64.powi(4)),
            ("Pi", 1024f64.powi(5)),
            ("Ei", 1024f64.powi(6)),
            ("m", 1e-3),
            ("k", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
            ("P", 1e15),
            ("E", 1e18),
        ];
        suffixes
            .iter()
            .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
            .unwrap_or((s, 1.0))
    };
    if number.is_empty()
        || !number
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '+')
    {
        return Err(format!("{s:?} is not a non-negative quantity"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a quantity"))?;
    let bytes = (value * multiplier).ceil();
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<u64, String> {
        to_bytes(&Quantity(s.into()))
    }

    #[test]
    fn binary_decimal_exponent_and_plain_forms() {
        assert_eq!(q("1Ki"), Ok(1024));
        assert_eq!(q("500Gi"), Ok(500 * (1 << 30)));
        assert_eq!(q("1.5Gi"), Ok(1536 * (1 << 20)));
        assert_eq!(q("2T"), Ok(2_000_000_000_000));
        assert_eq!(q("1e9"), Ok(1_000_000_000));
        assert_eq!(q("12345"), Ok(12345));
        assert_eq!(q("1500m"), Ok(2));
    }

    #[test]
    fn rejects_negative_and_garbage() {
        assert!(q("-1Gi").is_err());
        assert!(q("lots").is_err());
        assert!(q("Gi").is_err());
        assert!(q("1e400").is_err());
    }
}
