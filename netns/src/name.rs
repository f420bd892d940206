//! Names that are unique per process, short enough for interfaces.

use std::sync::atomic::{AtomicU32, Ordering};

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_LEN: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `prefix` + process id + a per-process counter (both base 36), at most 15
/// characters (the prefix is shortened if needed). Tests run one process per
/// test, so names never collide between concurrently running tests.
pub fn unique_name(prefix: &str) -> String {
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{}{}", base36(std::process::id()), base36(counter));
    let keep = MAX_LEN.saturating_sub(suffix.len()).min(prefix.len());
    let mut prefix = prefix.to_owned();
    while prefix.len() > keep {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = unique_name("cmtest");
        let b = unique_name("cmtest");
        assert_ne!(a, b);
        assert!(a.starts_with("cm"));
        let long = unique_name("a-very-long-prefix-for-an-interface");
        assert!(long.len() <= MAX_LEN, "{long}");
    }

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }
}
