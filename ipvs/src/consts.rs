//! Numbers from the kernel's `include/uapi/linux/ip_vs.h`, named as there.

pub(crate) const IPVS_GENL_NAME: &str = "IPVS";
pub(crate) const IPVS_GENL_VERSION: u8 = 1;

pub(crate) const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub(crate) const IPVS_CMD_SET_SERVICE: u8 = 2;
pub(crate) const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub(crate) const IPVS_CMD_GET_SERVICE: u8 = 4;
pub(crate) const IPVS_CMD_NEW_DEST: u8 = 5;
pub(crate) const IPVS_CMD_SET_DEST: u8 = 6;
pub(crate) const IPVS_CMD_DEL_DEST: u8 = 7;
pub(crate) const IPVS_CMD_GET_DEST: u8 = 8;
pub(crate) const IPVS_CMD_SET_CONFIG: u8 = 12;
pub(crate) const IPVS_CMD_GET_CONFIG: u8 = 13;
pub(crate) const IPVS_CMD_SET_INFO: u8 = 14;
pub(crate) const IPVS_CMD_GET_INFO: u8 = 15;
pub(crate) const IPVS_CMD_FLUSH: u8 = 17;

pub(crate) const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub(crate) const IPVS_CMD_ATTR_DEST: u16 = 2;
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub(crate) const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

pub(crate) const IPVS_SVC_ATTR_AF: u16 = 1;
pub(crate) const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub(crate) const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub(crate) const IPVS_SVC_ATTR_PORT: u16 = 4;
pub(crate) const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub(crate) const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub(crate) const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub(crate) const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub(crate) const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub(crate) const IPVS_SVC_ATTR_STATS: u16 = 10;
pub(crate) const IPVS_SVC_ATTR_STATS64: u16 = 12;

pub(crate) const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub(crate) const IPVS_DEST_ATTR_PORT: u16 = 2;
pub(crate) const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub(crate) const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub(crate) const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub(crate) const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub(crate) const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub(crate) const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub(crate) const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub(crate) const IPVS_DEST_ATTR_STATS: u16 = 10;
pub(crate) const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub(crate) const IPVS_DEST_ATTR_STATS64: u16 = 12;

pub(crate) const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub(crate) const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub(crate) const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub(crate) const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub(crate) const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;

pub(crate) const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub(crate) const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

pub(crate) const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
pub(crate) const IP_VS_CONN_F_MASQ: u32 = 0x0000;
pub(crate) const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
pub(crate) const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
pub(crate) const IP_VS_CONN_F_DROUTE: u32 = 0x0003;

/// Set by the kernel on every service in its table; never meaningful from user space.
pub(crate) const IP_VS_SVC_F_HASHED: u32 = 0x0002;

/// `sizeof(union nf_inet_addr)`: every address attribute carries 16 bytes.
pub(crate) const INET_ADDR_LEN: usize = 16;

pub(crate) const AF_INET: u16 = libc::AF_INET as u16;
pub(crate) const AF_INET6: u16 = libc::AF_INET6 as u16;
