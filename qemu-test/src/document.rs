//! Desired-state documents for the tests (format: docs/desired-state.md).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 UTC timestamp of `t` (seconds precision).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A document header valid from an hour ago for a day, then `body` (TOML sections).
pub fn document(version: u64, node: &str, body: &str) -> Vec<u8> {
    let now = SystemTime::now();
    let issued = now - Duration::from_secs(3600);
    let expires = now + Duration::from_secs(86_400);
    format!(
        "version = {version}\nnode = \"{node}\"\nissued_at = \"{}\"\nexpires_at = \"{}\"\n\n{body}",
        rfc3339(issued),
        rfc3339(expires)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_323_662)),
            "2026-11-22T05:01:02Z"
        );
    }
}
