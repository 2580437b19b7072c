//! The one place where kernel error numbers become words.
//!
//! rtnetlink hands back the errno of a refused request; what it means depends on the
//! request (ENODEV while creating a VLAN means its parent is missing; while adding a
//! route, that the output link is). [`explain`] names the object and says what went
//! wrong in those terms, with the errno's symbol for searching.

use nix::errno::Errno;
use nix::errno::Errno::{
    EADDRNOTAVAIL, EBUSY, EEXIST, EHOSTUNREACH, EINVAL, ENETDOWN, ENETUNREACH, ENODEV, ENOENT,
    EOPNOTSUPP, EPERM, ERANGE, ESRCH,
};

use crate::ops::{NewLink, Op};

/// The symbol and the generic meaning of `errno` (`("ENODEV", "no such device")`), from
/// the C library's names and descriptions as `nix` knows them; two get a hint of what
/// it usually means for this agent. `None` for a number the C library does not know.
pub fn meaning(errno: i32) -> Option<(String, String)> {
    let e = Errno::from_raw(errno);
    if e == Errno::UnknownErrno {
        return None;
    }
    let generic = match e {
        EPERM => "operation not permitted (the agent needs CAP_NET_ADMIN)".to_string(),
        EOPNOTSUPP => "not supported by this kernel (module missing?)".to_string(),
        _ => lower_first(e.desc()),
    };
    Some((format!("{e:?}"), generic))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A refused `op`, in words: `vlan101: parent eth9 does not exist (ENODEV)`.
pub fn explain(op: &Op, errno: i32) -> String {
    let (sym, generic) =
        meaning(errno).unwrap_or_else(|| (format!("errno {errno}"), "kernel error".into()));
    let specific: Option<String> = match (op, Errno::from_raw(errno)) {
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
    spec.kind()
}

/// Whether a failed removal can be taken as done (the object is already gone).
pub fn already_gone(op: &Op, errno: i32) -> bool {
    matches!(
        op,
        Op::DelRoute { .. } | Op::DelAddress { .. } | Op::DelLink { .. }
    ) && matches!(
        Errno::from_raw(errno),
        ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL
    )
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
            explain(&op, ENODEV as i32),
            "vlan101: parent eth9 does not exist (ENODEV)"
        );
        let op = Op::Create {
            name: "wg0".into(),
            spec: NewLink::Bond {
                mode: kowabunga_model::network::BondMode::ActiveBackup,
            },
        };
        assert_eq!(
            explain(&op, EOPNOTSUPP as i32),
            "wg0: this kernel cannot create bond links (module not available) (EOPNOTSUPP)"
        );
        let op = Op::SetUp {
            link: "eth0".into(),
            up: true,
        };
        assert_eq!(
            explain(&op, EPERM as i32),
            "eth0: set eth0 up failed: operation not permitted (the agent needs CAP_NET_ADMIN) (EPERM)"
        );
        assert_eq!(
            explain(&op, 4242),
            "eth0: set eth0 up failed: kernel error (errno 4242)"
        );
        assert!(already_gone(
            &Op::DelLink {
                name: "x".into(),
                kind: "bridge",
                mac: None,
            },
            ENODEV as i32
        ));
        assert!(!already_gone(&op, ENODEV as i32));
    }

    /// Every errno the C library knows has its symbol, not only a hand-picked few.
    #[test]
    fn names_come_from_the_c_library() {
        assert_eq!(
            meaning(Errno::ELOOP as i32),
            Some(("ELOOP".into(), "too many symbolic links encountered".into()))
        );
        assert_eq!(
            meaning(16),
            Some(("EBUSY".into(), "device or resource busy".into()))
        );
        assert_eq!(meaning(4242), None);
        let op = Op::SetMaster {
            link: "br0".into(),
            master: "br1".into(),
        };
        assert_eq!(
            explain(&op, Errno::ELOOP as i32),
            "br0: attach br0 to br1 failed: too many symbolic links encountered (ELOOP)"
        );
    }
}
