//! JSON Schema of the values the `[dns]` section checks beyond their Rust type (names,
//! `ip[:port]` recursors, address lists), so that the published schema accepts what
//! serde accepts. Checks that need more than one value (shadowed records) or a
//! range a pattern cannot say (unspecified or multicast addresses) stay in
//! [`super::signed`]; the schema's descriptions name them.

use schemars::{Schema, SchemaGenerator, json_schema};

/// One label: letters, digits, `-`, `_`, 1 to 63 characters (any case).
const LABEL: &str = "[A-Za-z0-9_-]{1,63}";
const IPV4: &str = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}";
const PORT: &str = "[0-9]{1,5}";

fn domain_pattern() -> String {
    format!(r"^{LABEL}(\.{LABEL})*\.?$")
}

fn address() -> Schema {
    json_schema!({
        "type": "string",
        "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }],
        "description": "An IPv4 or IPv6 address; not unspecified, not multicast."
    })
}

/// A zone or host name (`acme.local`, trailing dot optional).
pub fn domain_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 254,
        "pattern": domain_pattern(),
    })
}

/// `ip:port` (`0.0.0.0:53`, `[::]:53`).
fn socket_address() -> Schema {
    json_schema!({
        "type": "string",
        "pattern": format!(r"^({IPV4}|\[[0-9A-Fa-f:.]+\]):{PORT}$"),
    })
}

/// `listen`: at least one `ip:port`.
pub fn listen(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": socket_address(),
        "default": [super::DEFAULT_LISTEN],
    })
}

/// `recursors`: at least one `ip` or `ip:port`.
pub fn recursors(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": { "anyOf": [address(), socket_address()] },
        "default": super::DEFAULT_RECURSORS,
    })
}

/// `nameserver_addresses`: addresses, possibly none.
pub fn addresses(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": super::MAX_ADDRESSES_PER_NAME,
        "items": address(),
        "default": [],
    })
}

/// `zones`: zone name -> its table.
pub fn zones(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "maxLength": 254, "pattern": domain_pattern() },
        "additionalProperties": generator.subschema_for::<super::SignedZone>(),
        "default": {},
    })
}

/// `records`: relative name (`@` or empty for the apex) -> 1 to 64 addresses.
pub fn records(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": {
            "maxLength": 253,
            "pattern": format!(r"^(@|{LABEL}(\.{LABEL})*)?$"),
        },
        "additionalProperties": {
            "type": "array",
            "minItems": 1,
            "maxItems": super::MAX_ADDRESSES_PER_NAME,
            "items": address(),
        },
        "default": {},
    })
}
