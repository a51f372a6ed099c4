//! The encrypted overlays' keyring: created with the first encrypted overlay, rotated on a
//! schedule, one step per orchestrator pass (pure; the orchestrator writes the result).

use crate::model::{IpsecKey, Keyring};

/// A fresh key: 16 bytes of AES key and 4 of salt from the OS-seeded CSPRNG.
pub fn new_key(tag: u32) -> IpsecKey {
    use rand::Rng;
    let bytes: [u8; 20] = rand::rng().random();
    IpsecKey {
        tag,
        key: bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// What the keyring should become at `now`, if anything: created when the first encrypted
/// overlay exists; every `rotation` seconds a new key is added, made primary `settle` seconds
/// later, and the old one dropped `settle` seconds after that (so every node accepts a key
/// before any sends under it, and sends under the new one before the old one goes).
pub fn next_keyring(
    current: Option<&Keyring>,
    needed: bool,
    now: u64,
    rotation: u64,
    settle: u64,
) -> Option<Keyring> {
    use crate::model::RotationPhase::*;
    let Some(ring) = current else {
        return needed.then(|| Keyring {
            keys: vec![new_key(1)],
            primary: 1,
            phase: Steady,
            phase_at: now,
        });
    };
    let due = |after: u64| now >= ring.phase_at.saturating_add(after);
    let newest = ring.keys.iter().map(|k| k.tag).max().unwrap_or(0);
    match ring.phase {
        Steady if due(rotation) => {
            let mut next = ring.clone();
            next.keys.push(new_key(newest.wrapping_add(1).max(1)));
            next.phase = Added;
            next.phase_at = now;
            Some(next)
        }
        Added if due(settle) => Some(Keyring {
            primary: newest,
            phase: Switched,
            phase_at: now,
            ..ring.clone()
        }),
        Switched if due(settle) => Some(Keyring {
            keys: ring
                .keys
                .iter()
                .filter(|k| k.tag == ring.primary)
                .cloned()
                .collect(),
            phase: Steady,
            phase_at: now,
            ..ring.clone()
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RotationPhase;

    #[test]
    fn a_rotation_adds_then_switches_then_drops_a_settle_apart() {
        assert_eq!(next_keyring(None, false, 100, 60, 5), None);
        let ring = next_keyring(None, true, 100, 60, 5).unwrap();
        assert_eq!((ring.keys.len(), ring.primary), (1, 1));
        assert_eq!(ring.keys[0].key.len(), 40);
        assert_eq!(next_keyring(Some(&ring), true, 159, 60, 5), None);
        let added = next_keyring(Some(&ring), true, 160, 60, 5).unwrap();
        assert_eq!(added.phase, RotationPhase::Added);
        assert_eq!(
            added.primary, 1,
            "not sent under before every node accepts it"
        );
        assert_eq!(added.keys.len(), 2);
        assert_ne!(added.keys[0].key, added.keys[1].key);
        assert_eq!(next_keyring(Some(&added), true, 164, 60, 5), None);
        let switched = next_keyring(Some(&added), true, 165, 60, 5).unwrap();
        assert_eq!((switched.primary, switched.keys.len()), (2, 2));
        let steady = next_keyring(Some(&switched), true, 170, 60, 5).unwrap();
        assert_eq!(steady.phase, RotationPhase::Steady);
        assert_eq!(steady.keys, vec![added.keys[1].clone()]);
        assert_eq!(next_keyring(Some(&steady), true, 229, 60, 5), None);
    }
}
