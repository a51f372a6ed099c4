//! The socket side: one generic netlink socket, one request at a time.

use std::fmt::Debug;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::GenlCtrl;
use netlink_packet_generic::{GenlFamily, GenlHeader};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};

use crate::decode;
use crate::encode;
use crate::error::{IpvsError, Operation};
use crate::exchange::{Exchange, ExchangeError, Progress};
use crate::message::{IpvsReply, IpvsRequest};
use crate::types::*;

const GENL_ID_CTRL: u16 = 0x10;

/// A blocking IPVS client.
///
/// The socket belongs to the network namespace it was opened in, for its whole life,
/// whichever thread uses it later: to program a sandbox's IPVS, open the client on a thread
/// that has entered that namespace (or use [`IpvsClient::open_in_netns`], which does exactly
/// that on a short-lived thread). Calls block on the kernel's answer, which comes at once;
/// async callers run them with `spawn_blocking` or on their own thread.
#[derive(Debug)]
pub struct IpvsClient {
    socket: Socket,
    family_id: u16,
    seq: u32,
}

impl IpvsClient {
    /// Opens a socket in the calling thread's network namespace and resolves the IPVS family.
    /// Fails with [`IpvsError::Unavailable`] when that kernel has no IPVS.
    pub fn open() -> Result<Self, IpvsError> {
        let io = |source| IpvsError::Io {
            op: Operation::OpenSocket,
            source,
        };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(io)?;
        let mut client = IpvsClient {
            socket,
            family_id: 0,
            seq: 0,
        };
        client.family_id = client.resolve_family()?;
        tracing::debug!(
            family_id = client.family_id,
            "opened IPVS generic netlink socket"
        );
        Ok(client)
    }

    /// Opens the client inside the network namespace at `netns` (e.g. `/run/netns/x` or
    /// `/proc/<pid>/ns/net`) from a thread made for it, leaving the caller's namespace alone.
    pub fn open_in_netns(netns: &Path) -> Result<Self, IpvsError> {
        let enter = |source| IpvsError::EnterNetns {
            path: netns.to_path_buf(),
            source,
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = File::open(netns).map_err(enter)?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|errno| enter(std::io::Error::from(errno)))?;
                    IpvsClient::open()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(enter(std::io::Error::other(
                        "the thread opening the socket panicked",
                    )))
                })
        })
    }

    /// The id the kernel gave the "IPVS" family in this boot.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    pub fn add_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.command(
            Operation::AddService(service.key),
            encode::new_service(service),
        )
    }

    /// Changes scheduler, flags, timeout and netmask of an existing service.
    pub fn update_service(&mut self, service: &Service) -> Result<(), IpvsError> {
        self.command(
            Operation::UpdateService(service.key),
            encode::set_service(service),
        )
    }

    /// Deletes a service with all its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), IpvsError> {
        self.command(Operation::DeleteService(*key), encode::del_service(key))
    }

    /// One service, or `None` if the kernel has no such service.
    pub fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, IpvsError> {
        let op = Operation::GetService(*key);
        let replies =
            match self.exchange::<_, IpvsReply>(&op, encode::get_service(Some(key)), false) {
                Ok(replies) => replies,
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            };
        match replies.first() {
            Some(reply) => decode::service(reply)
                .map(Some)
                .map_err(|detail| IpvsError::Decode { op, detail }),
            None => Ok(None),
        }
    }

    /// Every service of this namespace (a multipart dump).
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let op = Operation::ListServices;
        let replies = self.exchange::<_, IpvsReply>(&op, encode::get_service(None), true)?;
        replies
            .iter()
            .map(decode::service)
            .collect::<Result<_, _>>()
            .map_err(|detail| IpvsError::Decode { op, detail })
    }

    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.command(
            Operation::AddDestination(*service, dest.socket_addr()),
            encode::new_dest(service, dest),
        )
    }

    /// Changes weight, forwarding and thresholds of the destination at `dest.addr:dest.port`.
    pub fn update_destination(
        &mut self,
        service: &ServiceKey,
        dest: &Destination,
    ) -> Result<(), IpvsError> {
        self.command(
            Operation::UpdateDestination(*service, dest.socket_addr()),
            encode::set_dest(service, dest),
        )
    }

    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<(), IpvsError> {
        self.command(
            Operation::DeleteDestination(*service, SocketAddr::new(addr, port)),
            encode::del_dest(service, &addr, port),
        )
    }

    /// The destinations of one service (a multipart dump); empty if the service is missing.
    pub fn destinations(
        &mut self,
        service: &ServiceKey,
    ) -> Result<Vec<DestinationEntry>, IpvsError> {
        let op = Operation::ListDestinations(*service);
        let replies = self.exchange::<_, IpvsReply>(&op, encode::get_dests(service), true)?;
        replies
            .iter()
            .map(|reply| decode::destination(reply, service.family()))
            .collect::<Result<_, _>>()
            .map_err(|detail| IpvsError::Decode { op, detail })
    }

    /// Deletes every service and destination of this namespace.
    pub fn flush(&mut self) -> Result<(), IpvsError> {
        self.command(Operation::Flush, encode::flush())
    }

    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let op = Operation::GetTimeouts;
        let reply = self.single(&op, encode::get_config())?;
        decode::timeouts(&reply).map_err(|detail| IpvsError::Decode { op, detail })
    }

    /// Sets the TCP, TCP FIN and UDP timeouts; a 0 leaves that one unchanged.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), IpvsError> {
        self.command(Operation::SetTimeouts, encode::set_config(timeouts))
    }

    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let op = Operation::GetInfo;
        let reply = self.single(&op, encode::get_info())?;
        decode::info(&reply).map_err(|detail| IpvsError::Decode { op, detail })
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let op = Operation::ResolveFamily;
        let request = encode::get_family();
        let replies = match self.exchange_with::<_, GenlCtrl>(&op, GENL_ID_CTRL, request, false) {
            Ok(replies) => replies,
            Err(IpvsError::Kernel { errno, .. }) if errno == libc::ENOENT => {
                return Err(IpvsError::Unavailable)
            }
            Err(e) => return Err(e),
        };
        replies
            .iter()
            .flat_map(|reply| reply.nlas.iter())
            .find_map(|nla| match nla {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| IpvsError::Decode {
                op,
                detail: "no family id in the controller's answer".to_string(),
            })
    }

    fn command(&mut self, op: Operation, request: IpvsRequest) -> Result<(), IpvsError> {
        tracing::debug!(%op, "ipvs");
        self.exchange::<_, IpvsReply>(&op, request, false).map(drop)
    }

    fn single(&mut self, op: &Operation, request: IpvsRequest) -> Result<IpvsReply, IpvsError> {
        let replies = self.exchange::<_, IpvsReply>(op, request, false)?;
        replies.into_iter().next().ok_or_else(|| IpvsError::Decode {
            op: op.clone(),
            detail: "the kernel acknowledged without answering".to_string(),
        })
    }

    fn exchange<Req, Rep>(
        &mut self,
        op: &Operation,
        request: Req,
        dump: bool,
    ) -> Result<Vec<Rep>, IpvsError>
    where
        Req: GenlFamily + Emitable + Debug,
        Rep: ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let family_id = self.family_id;
        self.exchange_with(op, family_id, request, dump)
    }

    fn exchange_with<Req, Rep>(
        &mut self,
        op: &Operation,
        family_id: u16,
        request: Req,
        dump: bool,
    ) -> Result<Vec<Rep>, IpvsError>
    where
        Req: GenlFamily + Emitable + Debug,
        Rep: ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let io = |source| IpvsError::Io {
            op: op.clone(),
            source,
        };
        self.seq = self.seq.wrapping_add(1);
        let bytes = encode::frame(family_id, self.seq, encode::flags(dump), request);
        self.socket.send(&bytes, 0).map_err(io)?;

        let mut exchange = Exchange::<Rep>::new(self.seq, dump);
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // Peek for the datagram's size first so a large dump part is never truncated.
            buf.clear();
            buf.reserve(1);
            let size = self
                .socket
                .recv(&mut buf, libc::MSG_PEEK | libc::MSG_TRUNC)
                .map_err(io)?;
            buf.clear();
            buf.reserve(size);
            self.socket.recv(&mut buf, 0).map_err(io)?;
            match exchange.feed(&buf) {
                Ok(Progress::More) => {}
                Ok(Progress::Complete) => return Ok(exchange.into_replies()),
                Err(ExchangeError::Kernel(errno)) => {
                    return Err(IpvsError::Kernel {
                        op: op.clone(),
                        errno,
                    })
                }
                Err(ExchangeError::Decode(detail)) => {
                    return Err(IpvsError::Decode {
                        op: op.clone(),
                        detail,
                    })
                }
            }
        }
    }
}
