//! Temporary interface names for links that are created in one namespace and renamed in
//! another: unique per process and call, and within the 15-byte IFNAMSIZ limit.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `rmt` + pid and counter as fixed-width hex: exactly 15 bytes.
pub(crate) fn temp_ifname() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
    let pid = std::process::id() & 0x3f_ffff;
    format!("rmt{pid:06x}{n:06x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_fit_ifnamsiz() {
        let a = temp_ifname();
        let b = temp_ifname();
        assert_ne!(a, b);
        assert_eq!(a.len(), 15, "{a}");
    }
}
