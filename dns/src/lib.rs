//! routemesh embedded DNS. Empty until the DNS issue lands: the foundation only writes each
//! sandbox's `/etc/resolv.conf` (nameserver 127.0.0.11), and nothing here pretends to answer.
