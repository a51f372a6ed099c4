//! The narrow interface the backend needs from IPVS: the real [`IpvsClient`] and a fake.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use routemesh_ipvs::{Destination, IpvsClient, IpvsError, Operation, Service, ServiceKey};

use super::state::IpvsChange;

// Linux errno values the kernel's IPVS answers with (lb does not depend on libc).
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;

/// One namespace's IPVS table.
pub trait IpvsTable {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError>;
    fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<Destination>, IpvsError>;
    fn apply(&mut self, change: &IpvsChange) -> Result<(), IpvsError>;
}

impl IpvsTable for IpvsClient {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        Ok(IpvsClient::services(self)?
            .into_iter()
            .map(|entry| entry.service)
            .collect())
    }

    fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        Ok(IpvsClient::destinations(self, service)?
            .into_iter()
            .map(|entry| entry.destination)
            .collect())
    }

    fn apply(&mut self, change: &IpvsChange) -> Result<(), IpvsError> {
        match change {
            IpvsChange::AddService(s) => self.add_service(s),
            IpvsChange::UpdateService(s) => self.update_service(s),
            IpvsChange::DeleteService(key) => self.delete_service(key),
            IpvsChange::AddDestination(key, d) => self.add_destination(key, d),
            IpvsChange::UpdateDestination(key, d) => self.update_destination(key, d),
            IpvsChange::DeleteDestination(key, addr) => {
                self.delete_destination(key, addr.ip(), addr.port())
            }
        }
    }
}

impl<T: IpvsTable + ?Sized> IpvsTable for &mut T {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        (**self).services()
    }

    fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        (**self).destinations(service)
    }

    fn apply(&mut self, change: &IpvsChange) -> Result<(), IpvsError> {
        (**self).apply(change)
    }
}

/// An in-memory IPVS table answering like the kernel (EEXIST, ESRCH, ENOENT), recording every
/// change it was asked for: the fake for unit tests of the backend and its callers.
#[derive(Debug, Default)]
pub struct FakeIpvs {
    pub table: BTreeMap<ServiceKey, (Service, BTreeMap<SocketAddr, Destination>)>,
    /// Every change applied or attempted, failed ones included.
    pub changes: Vec<IpvsChange>,
    /// How many service dumps were taken.
    pub dumps: usize,
    fail: VecDeque<i32>,
}

impl FakeIpvs {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next change fails with this errno (e.g. 12, ENOMEM).
    pub fn fail_next(&mut self, errno: i32) {
        self.fail.push_back(errno);
    }

    /// The changes recorded since the last call.
    pub fn take_changes(&mut self) -> Vec<IpvsChange> {
        std::mem::take(&mut self.changes)
    }
}

fn op_of(change: &IpvsChange) -> Operation {
    match change {
        IpvsChange::AddService(s) => Operation::AddService(s.key),
        IpvsChange::UpdateService(s) => Operation::UpdateService(s.key),
        IpvsChange::DeleteService(key) => Operation::DeleteService(*key),
        IpvsChange::AddDestination(key, d) => Operation::AddDestination(*key, d.socket_addr()),
        IpvsChange::UpdateDestination(key, d) => {
            Operation::UpdateDestination(*key, d.socket_addr())
        }
        IpvsChange::DeleteDestination(key, addr) => Operation::DeleteDestination(*key, *addr),
    }
}

impl IpvsTable for FakeIpvs {
    fn services(&mut self) -> Result<Vec<Service>, IpvsError> {
        self.dumps += 1;
        Ok(self.table.values().map(|(s, _)| s.clone()).collect())
    }

    fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<Destination>, IpvsError> {
        Ok(self
            .table
            .get(service)
            .map(|(_, dests)| dests.values().copied().collect())
            .unwrap_or_default())
    }

    fn apply(&mut self, change: &IpvsChange) -> Result<(), IpvsError> {
        self.changes.push(change.clone());
        let kernel = |errno| IpvsError::Kernel {
            op: op_of(change),
            errno,
        };
        if let Some(errno) = self.fail.pop_front() {
            return Err(kernel(errno));
        }
        match change {
            IpvsChange::AddService(s) => {
                if self.table.contains_key(&s.key) {
                    return Err(kernel(EEXIST));
                }
                self.table.insert(s.key, (s.clone(), BTreeMap::new()));
            }
            IpvsChange::UpdateService(s) => match self.table.get_mut(&s.key) {
                Some(entry) => entry.0 = s.clone(),
                None => return Err(kernel(ESRCH)),
            },
            IpvsChange::DeleteService(key) => {
                if self.table.remove(key).is_none() {
                    return Err(kernel(ESRCH));
                }
            }
            IpvsChange::AddDestination(key, d) => {
                let (_, dests) = self.table.get_mut(key).ok_or(kernel(ESRCH))?;
                if dests.contains_key(&d.socket_addr()) {
                    return Err(kernel(EEXIST));
                }
                dests.insert(d.socket_addr(), *d);
            }
            IpvsChange::UpdateDestination(key, d) => {
                let (_, dests) = self.table.get_mut(key).ok_or(kernel(ESRCH))?;
                match dests.get_mut(&d.socket_addr()) {
                    Some(old) => *old = *d,
                    None => return Err(kernel(ENOENT)),
                }
            }
            IpvsChange::DeleteDestination(key, addr) => {
                let (_, dests) = self.table.get_mut(key).ok_or(kernel(ESRCH))?;
                if dests.remove(addr).is_none() {
                    return Err(kernel(ENOENT));
                }
            }
        }
        Ok(())
    }
}
