//! The cluster UDP socket quinn runs on: bound here, with kernel buffers sized for bursts.

use std::net::{SocketAddr, UdpSocket};

use tracing::{debug, info};

/// Kernel buffer asked for the cluster UDP socket, each way. A body arrives as a burst of
/// datagrams; with the kernel default (208 KiB on Linux) a receiver busy writing one to disk
/// dropped hundreds per file, which QUIC then sent again. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max`, and only queued datagrams use the memory.
pub const UDP_SOCKET_BUFFER: usize = 2 * 1024 * 1024;

/// Binds the cluster socket and sizes its buffers.
pub(super) fn bind(listen: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    size_buffers(&socket);
    Ok(socket)
}

/// Asks the kernel for [`UDP_SOCKET_BUFFER`] each way; says so once when it grants less.
fn size_buffers(socket: &UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER) {
        debug!(error = %e, "setting the UDP receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(UDP_SOCKET_BUFFER) {
        debug!(error = %e, "setting the UDP send buffer");
    }
    // Linux reports twice what it was asked for (bookkeeping included), capped by the sysctl.
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < UDP_SOCKET_BUFFER {
        info!(
            granted,
            wanted = UDP_SOCKET_BUFFER,
            "the UDP receive buffer is capped by net.core.rmem_max; raise it to avoid drops while files move"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket gets what it asks for, up to the sysctl cap (Linux doubles both).
    #[test]
    fn the_cluster_socket_gets_the_buffer_the_kernel_allows() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let granted = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok());
        match cap {
            Some(cap) => assert_eq!(granted, 2 * UDP_SOCKET_BUFFER.min(cap)),
            // Not Linux, or no /proc: at least something was granted.
            None => assert!(granted > 0),
        }
    }
}
