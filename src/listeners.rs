//! Who listens on a port in the daemon's own namespace, read from /proc/net: a published port
//! that a local process already holds is refused, naming the process.

use crate::model::Proto;

/// A socket bound to `port`: its inode, from /proc/net/{tcp,tcp6,udp,udp6} text.
fn bound_inodes(table: &str, port: u16, listening_only: bool) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let state = f.get(3)?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            // 0A is TCP_LISTEN; UDP sockets are "listening" whenever bound.
            (p == port && (!listening_only || *state == "0A")).then_some(inode)
        })
        .collect()
}

fn owner_of(inode: u64) -> Option<String> {
    let want = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                let comm =
                    std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}

/// Describes the process listening on `port`/`proto` in our namespace, if any.
pub fn listener(port: u16, proto: Proto) -> Option<String> {
    let (files, listening_only) = match proto {
        Proto::Tcp => (["/proc/net/tcp", "/proc/net/tcp6"], true),
        Proto::Udp => (["/proc/net/udp", "/proc/net/udp6"], false),
        // The API publishes TCP and UDP only.
        Proto::Sctp => return None,
    };
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        if let Some(inode) = bound_inodes(&text, port, listening_only).first() {
            return Some(owner_of(*inode).unwrap_or_else(|| "a local process".to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_listening_sockets_by_port() {
        assert_eq!(bound_inodes(TCP, 8080, true), vec![4242]);
        assert!(
            bound_inodes(TCP, 80, true).is_empty(),
            "established, not listening"
        );
        assert_eq!(bound_inodes(TCP, 80, false), vec![777]);
    }

    #[test]
    fn sees_our_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let who = listener(port, Proto::Tcp).expect("our listener");
        assert!(who.contains(&std::process::id().to_string()), "{who}");
    }
}
