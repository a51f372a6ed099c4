//! routemesh load balancer: the virtual-service model and its dataplane backends
//! (nftables, IPVS). Empty until the routing-mesh issue lands; the foundation programs no
//! virtual services, and nothing here pretends otherwise.
