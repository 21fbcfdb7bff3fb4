//! systemd integration without a library: `sd_notify` messages over the `NOTIFY_SOCKET`
//! datagram socket (READY, RELOADING, STOPPING, STATUS, WATCHDOG), and the watchdog interval
//! systemd asks for. Outside systemd (no `NOTIFY_SOCKET`) everything here does nothing.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// The unit file shipped in `contrib/`, printed by `shoal systemd-unit`.
pub const UNIT: &str = include_str!("../contrib/shoal.service");

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service manager, if there is one.
/// Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => notify_to(Path::new(&path), state).is_ok(),
        None => false,
    }
}

/// Sends `state` to the notify socket at `socket` (a path, or `@name` for an abstract socket).
pub fn notify_to(socket: &Path, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(&path, "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("shoal-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(Path::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
