//! The one place where kernel error numbers become words.
//!
//! rtnetlink hands back the errno of a refused request; what it means depends on the
//! request (ENODEV while creating a VLAN means its parent is missing; while adding a
//! route, that the output link is). [`explain`] names the object and says what went
//! wrong in those terms, with the errno's symbol for searching.

use crate::ops::{NewLink, Op};

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENOMEM: i32 = 12;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const ERANGE: i32 = 34;
const EOPNOTSUPP: i32 = 95;
const EADDRNOTAVAIL: i32 = 99;
const ENETDOWN: i32 = 100;
const ENETUNREACH: i32 = 101;
const ENOBUFS: i32 = 105;
const EHOSTUNREACH: i32 = 113;

/// The symbol and the generic meaning of `errno`.
pub fn meaning(errno: i32) -> (&'static str, &'static str) {
    match errno {
        EPERM => (
            "EPERM",
            "operation not permitted (the agent needs CAP_NET_ADMIN)",
        ),
        ENOENT => ("ENOENT", "no such object"),
        ESRCH => ("ESRCH", "no such object"),
        ENOMEM => ("ENOMEM", "out of memory"),
        EACCES => ("EACCES", "permission denied"),
        EBUSY => ("EBUSY", "device or resource busy"),
        EEXIST => ("EEXIST", "already exists"),
        ENODEV => ("ENODEV", "no such device"),
        EINVAL => ("EINVAL", "invalid argument"),
        ERANGE => ("ERANGE", "value out of range"),
        EOPNOTSUPP => (
            "EOPNOTSUPP",
            "not supported by this kernel (module missing?)",
        ),
        EADDRNOTAVAIL => ("EADDRNOTAVAIL", "address not available"),
        ENETDOWN => ("ENETDOWN", "network is down"),
        ENETUNREACH => ("ENETUNREACH", "network unreachable"),
        ENOBUFS => ("ENOBUFS", "no buffer space"),
        EHOSTUNREACH => ("EHOSTUNREACH", "host unreachable"),
        _ => ("", "kernel error"),
    }
}

/// A refused `op`, in words: `vlan101: parent eth9 does not exist (ENODEV)`.
pub fn explain(op: &Op, errno: i32) -> String {
    let (sym, generic) = meaning(errno);
    let sym = if sym.is_empty() {
        format!("errno {errno}")
    } else {
        sym.to_string()
    };
    let specific: Option<String> = match (op, errno) {
        (
            Op::Create {
                name,
                spec: NewLink::Vlan { parent, .. },
            },
            ENODEV,
        ) => Some(format!("{name}: parent {parent} does not exist")),
        (
            Op::Create {
                name,
                spec: NewLink::Veth { peer },
            },
            EEXIST,
        ) => Some(format!(
            "{name}: cannot create veth pair, {name} or {peer} already exists"
        )),
        (Op::Create { name, .. }, EEXIST) => {
            Some(format!("{name}: a link with this name already exists"))
        }
        (Op::Create { name, spec }, EOPNOTSUPP) => Some(format!(
            "{name}: this kernel cannot create {} links (module not available)",
            kind(spec)
        )),
        (
            Op::Create {
                name,
                spec: NewLink::Vlan { id, .. },
            },
            ERANGE | EINVAL,
        ) => Some(format!("{name}: VLAN id {id} refused by the kernel")),
        (Op::SetMtu { link, mtu }, EINVAL | ERANGE) => Some(format!(
            "{link}: MTU {mtu} refused (above what the device or its parent allows?)"
        )),
        (Op::SetMaster { link, master }, EBUSY) => Some(format!(
            "{link}: cannot attach to {master}: already enslaved elsewhere"
        )),
        (Op::SetMaster { link, master }, EPERM) => Some(format!(
            "{link}: cannot attach to {master}: the link must be down first (bond) or cannot be enslaved"
        )),
        (Op::Rename { from, to }, EBUSY) => Some(format!("{from}: cannot rename to {to} while up")),
        (Op::Rename { from, to }, EEXIST) => {
            Some(format!("{from}: cannot rename to {to}: name taken"))
        }
        (
            Op::AddRoute {
                key,
                via: Some(via),
                ..
            },
            ENETUNREACH | EHOSTUNREACH,
        ) => Some(format!("route {key}: gateway {via} is unreachable")),
        (
            Op::AddRoute {
                key,
                dev: Some(dev),
                ..
            },
            ENODEV,
        ) => Some(format!("route {key}: link {dev} does not exist")),
        (
            Op::AddRoute {
                key,
                dev: Some(dev),
                ..
            },
            ENETDOWN,
        ) => Some(format!("route {key}: link {dev} is down")),
        (Op::AddAddress { link, addr }, EADDRNOTAVAIL | EINVAL) => {
            Some(format!("{link}: address {addr} refused by the kernel"))
        }
        (
            Op::DelRoute { .. } | Op::DelAddress { .. } | Op::DelLink { .. },
            ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL,
        ) => Some(format!("{}: already gone", op.object())),
        _ => None,
    };
    match specific {
        Some(s) => format!("{s} ({sym})"),
        None => format!("{}: {op} failed: {generic} ({sym})", op.object()),
    }
}

fn kind(spec: &NewLink) -> &'static str {
    match spec {
        NewLink::Bridge { .. } => "bridge",
        NewLink::Bond { .. } => "bond",
        NewLink::Veth { .. } => "veth",
        NewLink::Vlan { .. } => "vlan",
    }
}

/// Whether a failed removal can be taken as done (the object is already gone).
pub fn already_gone(op: &Op, errno: i32) -> bool {
    matches!(
        op,
        Op::DelRoute { .. } | Op::DelAddress { .. } | Op::DelLink { .. }
    ) && matches!(errno, ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_object_and_cause() {
        let op = Op::Create {
            name: "vlan101".into(),
            spec: NewLink::Vlan {
                parent: "eth9".into(),
                id: 101,
            },
        };
        assert_eq!(
            explain(&op, ENODEV),
            "vlan101: parent eth9 does not exist (ENODEV)"
        );
        let op = Op::Create {
            name: "wg0".into(),
            spec: NewLink::Bond {
                mode: kowabunga_model::network::BondMode::ActiveBackup,
            },
        };
        assert_eq!(
            explain(&op, EOPNOTSUPP),
            "wg0: this kernel cannot create bond links (module not available) (EOPNOTSUPP)"
        );
        let op = Op::SetUp {
            link: "eth0".into(),
            up: true,
        };
        assert_eq!(
            explain(&op, EPERM),
            "eth0: set eth0 up failed: operation not permitted (the agent needs CAP_NET_ADMIN) (EPERM)"
        );
        assert_eq!(
            explain(&op, 4242),
            "eth0: set eth0 up failed: kernel error (errno 4242)"
        );
        assert!(already_gone(
            &Op::DelLink {
                name: "x".into(),
                kind: "bridge"
            },
            ENODEV
        ));
        assert!(!already_gone(&op, ENODEV));
    }
}
