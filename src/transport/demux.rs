//! The cluster socket as quinn sees it, with sealed datagrams taken out on the way in.
//!
//! quinn owns the receive loop of the one UDP socket; sealed datagrams (`sealed`) share that
//! socket so that a peer needs one port and one address. This wrapper hands every received
//! datagram whose first byte has QUIC's fixed bit clear to [`SealedSink`] and passes the rest
//! to quinn untouched. With GRO the kernel may coalesce datagrams of one sender into one
//! buffer at a fixed stride; sealed ones are cut out of such a buffer and the rest closed up.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use super::sealed;

/// Takes the sealed datagrams (and unknown-key replies) received on the cluster socket.
pub(super) trait SealedSink: Send + Sync + 'static {
    /// Handles one; returns a reply to send back to `from`, if any.
    fn on_datagram(&self, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>>;
}

/// quinn's socket with sealed datagrams diverted to a sink.
pub(super) struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    sink: Arc<dyn SealedSink>,
}

impl Demux {
    pub(super) fn new(inner: Arc<dyn AsyncUdpSocket>, sink: Arc<dyn SealedSink>) -> Demux {
        Demux { inner, sink }
    }

    /// Sends one datagram without waiting; false when the socket would block or failed
    /// (the datagram is lost, as a lossy path would lose it).
    pub(super) fn send_to(socket: &dyn AsyncUdpSocket, to: SocketAddr, datagram: &[u8]) -> bool {
        socket
            .try_send(&Transmit {
                destination: to,
                ecn: None,
                contents: datagram,
                segment_size: None,
                src_ip: None,
            })
            .is_ok()
    }

    /// Diverts the sealed datagrams of one received buffer; returns its new length.
    fn divert(&self, buf: &mut [u8], meta: &RecvMeta) -> usize {
        let len = meta.len.min(buf.len());
        let stride = meta.stride.max(1);
        // The common case, a QUIC packet or a run of them: nothing to do.
        if (0..len).step_by(stride).all(|at| !sealed::is_ours(buf[at])) {
            return len;
        }
        let mut kept = 0;
        let mut at = 0;
        while at < len {
            let end = (at + stride).min(len);
            if sealed::is_ours(buf[at]) {
                if let Some(reply) = self.sink.on_datagram(meta.addr, &buf[at..end]) {
                    Demux::send_to(&*self.inner, meta.addr, &reply);
                }
            } else {
                // Segments keep their stride: only a final, shorter segment can be short, and
                // it stays last.
                buf.copy_within(at..end, kept);
                kept += end - at;
            }
            at = end;
        }
        kept
    }
}

impl fmt::Debug for Demux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demux").field("inner", &self.inner).finish()
    }
}

impl AsyncUdpSocket for Demux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.inner.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (buf, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            // A buffer left empty is skipped by quinn's receive loop.
            m.len = self.divert(buf, m);
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Vec<u8>>>);

    impl SealedSink for Collect {
        fn on_datagram(&self, _: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
            self.0.lock().unwrap().push(datagram.to_vec());
            None
        }
    }

    fn demux() -> (Demux, Arc<Collect>) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, sock).unwrap();
        let sink = Arc::new(Collect::default());
        (Demux::new(inner, sink.clone()), sink)
    }

    fn meta(len: usize, stride: usize) -> RecvMeta {
        RecvMeta {
            addr: "127.0.0.1:1".parse().unwrap(),
            len,
            stride,
            ecn: None,
            dst_ip: None,
        }
    }

    #[tokio::test]
    async fn sealed_segments_are_cut_out_of_a_coalesced_buffer() {
        let (d, sink) = demux();
        // Three 4-byte segments and a short last one: QUIC, sealed, QUIC, sealed(short).
        let mut buf = *b"\x40aaa\x20bbb\x41ccc\x20d";
        let kept = d.divert(&mut buf, &meta(14, 4));
        assert_eq!(&buf[..kept], b"\x40aaa\x41ccc");
        assert_eq!(*sink.0.lock().unwrap(), vec![b"\x20bbb".to_vec(), b"\x20d".to_vec()]);
    }

    #[tokio::test]
    async fn quic_packets_pass_untouched_and_a_lone_sealed_one_leaves_nothing() {
        let (d, sink) = demux();
        let mut quic = *b"\xc0long header\x40short";
        assert_eq!(d.divert(&mut quic, &meta(18, 18)), 18);
        let mut ours = *b"\x21unknown";
        assert_eq!(d.divert(&mut ours, &meta(8, 8)), 0);
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }
}
