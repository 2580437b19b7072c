//! Domain names and address lists as the `[dns]` section and Kahuna write them:
//! normalised (lowercase, zones without the trailing dot, records relative to their
//! zone) and checked, with errors naming the input.

use std::net::IpAddr;

use super::{Addresses, DnsError, MAX_ADDRESSES_PER_NAME};

/// A zone name, normalised: lowercase, no trailing dot, valid labels.
pub fn zone_name(text: &str) -> Result<String, DnsError> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err(bad_name(text, "empty (the root zone cannot be managed)"));
    }
    check_labels(text, &name)?;
    Ok(name)
}

/// A record name relative to its zone, normalised: lowercase; `@` or empty is the apex.
pub fn record_name(text: &str) -> Result<String, DnsError> {
    if text.is_empty() || text == "@" {
        return Ok("@".to_owned());
    }
    if text.ends_with('.') {
        return Err(bad_name(
            text,
            "record names are relative to their zone (no trailing dot)",
        ));
    }
    let name = text.to_ascii_lowercase();
    check_labels(text, &name)?;
    Ok(name)
}

/// A fully qualified host name (the server's own name): same rules as a zone name.
pub fn host_name(text: &str) -> Result<String, DnsError> {
    zone_name(text)
}

fn check_labels(original: &str, name: &str) -> Result<(), DnsError> {
    if name.len() > 253 {
        return Err(bad_name(original, "longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(bad_name(original, "empty label"));
        }
        if label.len() > 63 {
            return Err(bad_name(original, "a label is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(bad_name(
                original,
                &format!("character {c:?} is not allowed"),
            ));
        }
    }
    Ok(())
}

/// A non-empty list of at most [`MAX_ADDRESSES_PER_NAME`] unicast addresses.
pub(super) fn check_addresses(fqdn: &str, addresses: &[IpAddr]) -> Result<(), DnsError> {
    if addresses.is_empty() {
        return Err(DnsError::NoAddresses {
            name: fqdn.to_owned(),
        });
    }
    if addresses.len() > MAX_ADDRESSES_PER_NAME {
        return Err(DnsError::TooManyAddresses {
            name: fqdn.to_owned(),
            count: addresses.len(),
        });
    }
    if let Some(bad) = addresses
        .iter()
        .find(|a| a.is_unspecified() || a.is_multicast())
    {
        return Err(DnsError::BadAddress {
            name: fqdn.to_owned(),
            address: bad.to_string(),
        });
    }
    Ok(())
}

/// Parse textual addresses (as upstream sends them), naming the record on error.
pub fn parse_addresses(fqdn: &str, texts: &[String]) -> Result<Addresses, DnsError> {
    texts
        .iter()
        .map(|t| {
            t.trim()
                .parse::<IpAddr>()
                .map_err(|_| DnsError::BadAddress {
                    name: fqdn.to_owned(),
                    address: t.clone(),
                })
        })
        .collect()
}

fn bad_name(name: &str, reason: &str) -> DnsError {
    DnsError::BadName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}
