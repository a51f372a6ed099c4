//! What the kernel's IPVS table should hold (pure, from the spec and the marks), what it holds
//! (read from a dump), and the changes from one to the other.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use routemesh_ipvs::{Destination, Family, IpvsError, Service, ServiceFlags, ServiceKey};

use crate::model::{Scheduler, ValidLbSpec};

use super::kernel::IpvsTable;
use super::marks::{Marks, MARK_FIRST, MARK_LAST};

/// One fwmark service and its destinations, keyed by address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub service: Service,
    pub destinations: BTreeMap<SocketAddr, Destination>,
}

/// The backend's part of a namespace's IPVS table: fwmark (IPv4) services in
/// `MARK_FIRST..=MARK_LAST`, by mark.
pub type IpvsState = BTreeMap<u32, ServiceState>;

/// One request to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsChange {
    AddService(Service),
    UpdateService(Service),
    DeleteService(ServiceKey),
    AddDestination(ServiceKey, Destination),
    UpdateDestination(ServiceKey, Destination),
    DeleteDestination(ServiceKey, SocketAddr),
}

/// The key of the backend's service for `mark`.
pub fn fwmark_key(mark: u32) -> ServiceKey {
    ServiceKey::Fwmark {
        mark,
        family: Family::Inet,
    }
}

/// Whether a service is one the backend owns (and so may update or delete).
pub fn is_owned(key: &ServiceKey) -> bool {
    matches!(key, ServiceKey::Fwmark { mark, family: Family::Inet }
        if (MARK_FIRST..=MARK_LAST).contains(mark))
}

/// The fwmark service of one frontend. `sh` and `mh` get their fallback flag (the same bit,
/// `IP_VS_SVC_F_SCHED1`), so a client hashed to a draining (weight 0) destination is sent to
/// another one instead of being refused.
pub fn fwmark_service(mark: u32, scheduler: Scheduler) -> Service {
    let mut service = Service::new(fwmark_key(mark), scheduler);
    if matches!(scheduler, Scheduler::Sh | Scheduler::Mh) {
        service.flags = ServiceFlags::SH_FALLBACK;
    }
    service
}

/// What IPVS should hold for `spec`: one fwmark service per frontend (every frontend in
/// `marks`), one masquerading destination per backend with the backend's weight (0: draining)
/// and port (0 for an address-only VIP: the packet's own port is kept). Pure.
pub fn desired_state(spec: &ValidLbSpec, marks: &Marks) -> IpvsState {
    let mut state = IpvsState::new();
    for vs in spec.services() {
        let Some(&mark) = marks.get(&vs.frontend) else {
            continue;
        };
        let destinations = vs
            .backends
            .iter()
            .map(|b| {
                let dest = Destination {
                    weight: b.weight,
                    ..Destination::new(IpAddr::V4(b.addr), b.port)
                };
                (dest.socket_addr(), dest)
            })
            .collect();
        state.insert(
            mark,
            ServiceState {
                service: fwmark_service(mark, vs.scheduler),
                destinations,
            },
        );
    }
    state
}

/// The owned part of the kernel's table (see [`is_owned`]); other services are left alone.
pub fn read_state(ipvs: &mut impl IpvsTable) -> Result<IpvsState, IpvsError> {
    let mut state = IpvsState::new();
    for service in ipvs.services()? {
        let ServiceKey::Fwmark { mark, .. } = service.key else {
            continue;
        };
        if !is_owned(&service.key) {
            continue;
        }
        let destinations = ipvs
            .destinations(&service.key)?
            .into_iter()
            .map(|d| (d.socket_addr(), d))
            .collect();
        state.insert(
            mark,
            ServiceState {
                service,
                destinations,
            },
        );
    }
    Ok(state)
}

/// The requests that turn `current` into `desired`. Pure. Order: new services with their
/// destinations, then per kept service its update, added, updated and deleted destinations, and
/// every deleted service last (the caller removes the marks before that, so no marked packet
/// meets a missing service).
pub fn diff(current: &IpvsState, desired: &IpvsState) -> Vec<IpvsChange> {
    let mut changes = Vec::new();
    for (mark, want) in desired {
        let key = want.service.key;
        let Some(have) = current.get(mark) else {
            changes.push(IpvsChange::AddService(want.service.clone()));
            changes.extend(
                want.destinations
                    .values()
                    .map(|d| IpvsChange::AddDestination(key, *d)),
            );
            continue;
        };
        if have.service != want.service {
            changes.push(IpvsChange::UpdateService(want.service.clone()));
        }
        for (addr, dest) in &want.destinations {
            match have.destinations.get(addr) {
                None => changes.push(IpvsChange::AddDestination(key, *dest)),
                Some(old) if old != dest => changes.push(IpvsChange::UpdateDestination(key, *dest)),
                Some(_) => {}
            }
        }
        for addr in have.destinations.keys() {
            if !want.destinations.contains_key(addr) {
                changes.push(IpvsChange::DeleteDestination(key, *addr));
            }
        }
    }
    for (mark, have) in current {
        if !desired.contains_key(mark) {
            changes.push(IpvsChange::DeleteService(have.service.key));
        }
    }
    changes
}

/// Counts of a change list, for the sync report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub services_added: usize,
    pub services_updated: usize,
    pub services_removed: usize,
    pub destinations_added: usize,
    pub destinations_updated: usize,
    pub destinations_removed: usize,
}

impl ChangeCounts {
    pub fn of(changes: &[IpvsChange]) -> Self {
        let mut counts = ChangeCounts::default();
        for change in changes {
            match change {
                IpvsChange::AddService(_) => counts.services_added += 1,
                IpvsChange::UpdateService(_) => counts.services_updated += 1,
                IpvsChange::DeleteService(_) => counts.services_removed += 1,
                IpvsChange::AddDestination(..) => counts.destinations_added += 1,
                IpvsChange::UpdateDestination(..) => counts.destinations_updated += 1,
                IpvsChange::DeleteDestination(..) => counts.destinations_removed += 1,
            }
        }
        counts
    }
}
