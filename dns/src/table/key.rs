//! The lookup key of a name: its labels in wire form (length byte + bytes), ASCII-lowercased,
//! without the root label. Length-prefixed labels keep `a\.b` (one label) apart from `a.b`.
//! Built on the stack, so a lookup allocates nothing.

use hickory_proto::rr::Name;

/// Longest wire-form name (RFC 1035 section 2.3.4).
const MAX_KEY: usize = 255;

#[derive(Clone, Copy)]
pub struct NameKey {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl NameKey {
    /// The key of a parsed name; case and a trailing dot do not matter.
    pub fn from_name(name: &Name) -> Option<Self> {
        let mut key = NameKey {
            buf: [0; MAX_KEY],
            len: 0,
        };
        for label in name.iter() {
            key.push_label(label)?;
        }
        Some(key)
    }

    /// The key of a dotted name (`web.1`, `tasks.web.`); `None` if it is not a valid DNS name.
    pub fn from_dotted(name: &str) -> Option<Self> {
        let parsed = Name::from_ascii(name).ok()?;
        Self::from_name(&parsed)
    }

    fn push_label(&mut self, label: &[u8]) -> Option<()> {
        let len = u8::try_from(label.len()).ok()?;
        let end = self.len + 1 + label.len();
        if end > MAX_KEY {
            return None;
        }
        self.buf[self.len] = len;
        for (slot, byte) in self.buf[self.len + 1..end].iter_mut().zip(label) {
            *slot = byte.to_ascii_lowercase();
        }
        self.len = end;
        Some(())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_trailing_dot_do_not_matter() {
        let a = NameKey::from_dotted("Tasks.WEB.").map(|k| k.as_bytes().to_vec());
        let b = NameKey::from_dotted("tasks.web").map(|k| k.as_bytes().to_vec());
        assert_eq!(a, b);
        assert_eq!(a, Some(b"\x05tasks\x03web".to_vec()));
    }

    #[test]
    fn escaped_dot_is_a_different_name() {
        let one_label = NameKey::from_dotted("web\\.1").map(|k| k.as_bytes().to_vec());
        let two_labels = NameKey::from_dotted("web.1").map(|k| k.as_bytes().to_vec());
        assert_ne!(one_label, two_labels);
    }
}
