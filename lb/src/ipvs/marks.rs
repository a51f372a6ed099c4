//! Firewall marks: one per frontend, stable for as long as the frontend stays in the spec.
//!
//! Marks live in `MARK_FIRST..=MARK_LAST` (0x100-0xffff, as Docker starts at 0x100). A fresh
//! allocation gives the spec's frontends, in their sorted order, `0x100 + index`; afterwards a
//! frontend keeps its mark across syncs, and a new frontend takes the lowest mark that neither a
//! current frontend holds nor a frontend removed in the same sync held (so a mark is never handed
//! to another frontend in the sync that frees it). The allocation is memory only: a restarted
//! agent allocates afresh and replaces the marking table and the IPVS services to match;
//! established connections survive a renumbering, since IPVS finds them by their addresses, not
//! by the mark.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Frontend;

/// First firewall mark of the range the backend owns in its namespace.
pub const MARK_FIRST: u32 = 0x100;
/// Last firewall mark of that range.
pub const MARK_LAST: u32 = 0xffff;

/// Frontend -> firewall mark.
pub type Marks = BTreeMap<Frontend, u32>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{frontend}: no firewall mark left: all marks {MARK_FIRST:#x}-{MARK_LAST:#x} are in use")]
pub struct MarksExhausted {
    pub frontend: Frontend,
}

/// The marks of `frontends`: kept from `previous` where the frontend had one, else the lowest
/// free one (see the module docs). Pure.
pub fn allocate_marks(
    previous: &Marks,
    frontends: impl IntoIterator<Item = Frontend>,
) -> Result<Marks, MarksExhausted> {
    let taken: BTreeSet<u32> = previous.values().copied().collect();
    let mut marks = Marks::new();
    let mut fresh = Vec::new();
    for frontend in frontends {
        match previous.get(&frontend) {
            Some(&mark) => {
                marks.insert(frontend, mark);
            }
            None => fresh.push(frontend),
        }
    }
    let mut next = MARK_FIRST;
    for frontend in fresh {
        if marks.contains_key(&frontend) {
            continue;
        }
        while taken.contains(&next) {
            next += 1;
        }
        if next > MARK_LAST {
            return Err(MarksExhausted { frontend });
        }
        marks.insert(frontend, next);
        next += 1;
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::Proto;

    fn vipa(last: u8) -> Frontend {
        Frontend::VipAnyPort {
            addr: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    fn published(port: u16) -> Frontend {
        Frontend::Published {
            port,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn fresh_allocation_is_base_plus_index() {
        let marks = allocate_marks(&Marks::new(), [vipa(2), vipa(3), published(80)]).unwrap();
        assert_eq!(marks[&vipa(2)], 0x100);
        assert_eq!(marks[&vipa(3)], 0x101);
        assert_eq!(marks[&published(80)], 0x102);
    }

    #[test]
    fn kept_frontends_keep_their_marks_and_freed_marks_wait_a_sync() {
        let first = allocate_marks(&Marks::new(), [vipa(2), vipa(3), vipa(4)]).unwrap();
        // vipa(3) leaves, vipa(1) arrives: 0x101 was freed in this sync, so vipa(1) gets 0x103.
        let second = allocate_marks(&first, [vipa(1), vipa(2), vipa(4)]).unwrap();
        assert_eq!(second[&vipa(2)], 0x100);
        assert_eq!(second[&vipa(4)], 0x102);
        assert_eq!(second[&vipa(1)], 0x103);
        assert_eq!(second.len(), 3);
        // One sync later 0x101 is free again.
        let third = allocate_marks(&second, [vipa(1), vipa(2), vipa(4), vipa(9)]).unwrap();
        assert_eq!(third[&vipa(9)], 0x101);
        assert_eq!(third[&vipa(1)], 0x103);
        // Unchanged frontends: the same marks.
        assert_eq!(
            allocate_marks(&third, third.keys().copied()).unwrap(),
            third
        );
    }

    #[test]
    fn exhaustion_names_the_frontend() {
        let count = (MARK_LAST - MARK_FIRST + 1) as usize;
        let frontends: Vec<Frontend> = (0..=count)
            .map(|i| Frontend::VipAnyPort {
                addr: Ipv4Addr::from(0x0a00_0000 + i as u32),
            })
            .collect();
        let err = allocate_marks(&Marks::new(), frontends.iter().copied()).unwrap_err();
        assert_eq!(err.frontend, frontends[count]);
        assert_eq!(
            err.to_string(),
            "address-only VIP 10.0.255.0: no firewall mark left: all marks 0x100-0xffff are in use"
        );
    }
}
