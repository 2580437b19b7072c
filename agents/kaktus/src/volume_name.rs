//! Volume names: one file name in a pool's directory, never a path.

/// Longest volume name accepted (a file name on every Linux file system).
pub const MAX_LEN: usize = 200;

/// Accept `name` as a volume name: not empty, at most [`MAX_LEN`] bytes, no `/`, no
/// NUL or control characters, not starting with `.` (so never `.` or `..`, and never
/// one of the agent's hidden work files).
pub fn check(name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_LEN {
        "is longer than 200 bytes"
    } else if name.contains('/') {
        "contains `/`"
    } else if name.starts_with('.') {
        "starts with `.` (`.`, `..` and hidden names are refused)"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(format!("volume name {name:?} {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_and_dot_names() {
        for ok in ["vm1-os", "debian-12.qcow2", "a"] {
            assert_eq!(check(ok), Ok(()));
        }
        for bad in ["", ".", "..", "../etc", "a/b", ".hidden", "a\0b", "a\nb"] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check(&"x".repeat(201)).unwrap_err().contains("longer"));
        assert!(
            check("a/b")
                .unwrap_err()
                .contains("volume name \"a/b\" contains `/`")
        );
    }
}
