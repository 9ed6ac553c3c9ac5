//! The kernel's `TCP_INFO` for a live TCP socket: round-trip time, retransmissions,
//! congestion window, bytes acknowledged and received, and the TCP state.
//!
//! One function, [`tcp_info`], reads it with `getsockopt(IPPROTO_TCP, TCP_INFO)` from a
//! socket the caller *borrows* (`AsFd`), so the socket is open for the whole call: there is no
//! way to hand it a file descriptor number that may have been closed and reused.
//!
//! Linux only; elsewhere [`tcp_info`] returns an error of kind
//! [`Unsupported`](std::io::ErrorKind::Unsupported).
//!
//! ```
//! # #[cfg(target_os = "linux")]
//! # fn main() -> std::io::Result<()> {
//! let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
//! let info = tcp_info::tcp_info(&stream)?;
//! assert_eq!(info.state, tcp_info::TCP_ESTABLISHED);
//! # Ok(())
//! # }
//! # #[cfg(not(target_os = "linux"))]
//! # fn main() {}
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::io;
use std::os::fd::AsFd;

/// `tcpi_state` of an established connection (the kernel's `TCP_ESTABLISHED`).
pub const TCP_ESTABLISHED: u8 = 1;

/// What the kernel reports for one socket, in the kernel's units.
///
/// The fields up to `total_retrans` exist in every kernel since 2.6; the later ones were added
/// over time (`bytes_acked` and `bytes_received` in 4.1, `min_rtt` in 4.6, `delivery_rate` in
/// 4.9) and are `None` when the running kernel's structure is too short to hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TcpInfo {
    /// The TCP state (`TCP_ESTABLISHED` = 1, `TCP_SYN_SENT` = 2, … `TCP_CLOSING` = 11, as in
    /// the kernel's `include/net/tcp_states.h`).
    pub state: u8,
    /// Retransmissions of the current unacknowledged segment (`tcpi_retransmits`).
    pub retransmits: u8,
    /// Smoothed round-trip time, microseconds (`tcpi_rtt`).
    pub rtt_us: u32,
    /// Round-trip time variance, microseconds (`tcpi_rttvar`).
    pub rtt_var_us: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked: u32,
    /// Segments the kernel considers lost (`tcpi_lost`).
    pub lost: u32,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub snd_cwnd: u32,
    /// Maximum segment size for sending, bytes (`tcpi_snd_mss`).
    pub snd_mss: u32,
    /// Retransmitted segments over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub bytes_acked: Option<u64>,
    /// Bytes received (`tcpi_bytes_received`).
    pub bytes_received: Option<u64>,
    /// Minimum round-trip time seen, microseconds (`tcpi_min_rtt`).
    pub min_rtt_us: Option<u32>,
    /// The most recent delivery rate estimate, bytes per second (`tcpi_delivery_rate`).
    pub delivery_rate: Option<u64>,
}

/// Reads `TCP_INFO` from `socket`, which must be a TCP socket.
///
/// # Errors
///
/// The `getsockopt` error (`ENOTSOCK`, `ENOPROTOOPT` for a socket that is not TCP, …), or
/// [`Unsupported`](io::ErrorKind::Unsupported) on systems other than Linux.
pub fn tcp_info(socket: &impl AsFd) -> io::Result<TcpInfo> {
    imp::read(socket)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::mem::{offset_of, size_of};
    use std::os::fd::{AsFd, AsRawFd};

    use super::TcpInfo;

    /// The start of the kernel's `struct tcp_info` (`include/uapi/linux/tcp.h`), up to
    /// `tcpi_delivery_rate`. The kernel copies `min(its size, ours)` bytes and says how many
    /// it wrote, so a newer kernel's longer structure is cut to this one, and an older
    /// kernel's shorter one leaves the fields it lacks out (see `Raw::has`).
    #[repr(C)]
    #[derive(Default)]
    pub(crate) struct Raw {
        pub(crate) state: u8,
        pub(crate) ca_state: u8,
        pub(crate) retransmits: u8,
        pub(crate) probes: u8,
        pub(crate) backoff: u8,
        pub(crate) options: u8,
        pub(crate) wscale: u8,
        pub(crate) rate_flags: u8,
        pub(crate) rto: u32,
        pub(crate) ato: u32,
        pub(crate) snd_mss: u32,
        pub(crate) rcv_mss: u32,
        pub(crate) unacked: u32,
        pub(crate) sacked: u32,
        pub(crate) lost: u32,
        pub(crate) retrans: u32,
        pub(crate) fackets: u32,
        pub(crate) last_data_sent: u32,
        pub(crate) last_ack_sent: u32,
        pub(crate) last_data_recv: u32,
        pub(crate) last_ack_recv: u32,
        pub(crate) pmtu: u32,
        pub(crate) rcv_ssthresh: u32,
        pub(crate) rtt: u32,
        pub(crate) rttvar: u32,
        pub(crate) snd_ssthresh: u32,
        pub(crate) snd_cwnd: u32,
        pub(crate) advmss: u32,
        pub(crate) reordering: u32,
        pub(crate) rcv_rtt: u32,
        pub(crate) rcv_space: u32,
        pub(crate) total_retrans: u32,
        pub(crate) pacing_rate: u64,
        pub(crate) max_pacing_rate: u64,
        pub(crate) bytes_acked: u64,
        pub(crate) bytes_received: u64,
        pub(crate) segs_out: u32,
        pub(crate) segs_in: u32,
        pub(crate) notsent_bytes: u32,
        pub(crate) min_rtt: u32,
        pub(crate) data_segs_in: u32,
        pub(crate) data_segs_out: u32,
        pub(crate) delivery_rate: u64,
    }

    impl Raw {
        /// Whether the `len` bytes the kernel wrote cover the field at `offset` of `size`.
        fn has(len: usize, offset: usize, size: usize) -> bool {
            len >= offset + size
        }

        pub(crate) fn into_info(self, len: usize) -> TcpInfo {
            macro_rules! opt {
                ($field:ident) => {
                    Raw::has(
                        len,
                        offset_of!(Raw, $field),
                        std::mem::size_of_val(&self.$field),
                    )
                    .then_some(self.$field)
                };
            }
            TcpInfo {
                state: self.state,
                retransmits: self.retransmits,
                rtt_us: self.rtt,
                rtt_var_us: self.rttvar,
                unacked: self.unacked,
                lost: self.lost,
                snd_cwnd: self.snd_cwnd,
                snd_mss: self.snd_mss,
                total_retrans: self.total_retrans,
                bytes_acked: opt!(bytes_acked),
                bytes_received: opt!(bytes_received),
                min_rtt_us: opt!(min_rtt),
                delivery_rate: opt!(delivery_rate),
            }
        }
    }

    /// The fields every kernel since 2.6 writes: anything shorter is not a `tcp_info`.
    const MIN_LEN: usize = offset_of!(Raw, total_retrans) + size_of::<u32>();

    pub(super) fn read(socket: &impl AsFd) -> io::Result<TcpInfo> {
        let fd = socket.as_fd();
        let mut raw = Raw::default();
        let mut len = size_of::<Raw>() as libc::socklen_t;
        // SAFETY: `fd` is borrowed from `socket`, so it is an open descriptor for the whole
        // call. `raw` is a live, writable, properly aligned `repr(C)` value of `size_of::<Raw>()`
        // bytes, and `len` says exactly that size: the kernel writes at most `len` bytes into
        // it and stores in `len` how many it wrote. Every field is an integer, so any bytes
        // the kernel writes (and the zeroes it leaves) are valid values.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut raw as *mut Raw).cast::<libc::c_void>(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = len as usize;
        if len < MIN_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TCP_INFO returned {len} bytes, fewer than the {MIN_LEN} of any kernel's"),
            ));
        }
        Ok(raw.into_info(len))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The layout is the kernel's: the offsets `include/uapi/linux/tcp.h` gives, and
        /// glibc's `struct tcp_info` (as the libc crate declares it) agrees where it has the field.
        #[test]
        fn the_layout_is_the_kernels() {
            assert_eq!(offset_of!(Raw, rto), 8);
            assert_eq!(offset_of!(Raw, unacked), 24);
            assert_eq!(offset_of!(Raw, lost), 32);
            assert_eq!(offset_of!(Raw, rtt), 68);
            assert_eq!(offset_of!(Raw, rttvar), 72);
            assert_eq!(offset_of!(Raw, snd_cwnd), 80);
            assert_eq!(offset_of!(Raw, total_retrans), 100);
            assert_eq!(offset_of!(Raw, bytes_acked), 120);
            assert_eq!(offset_of!(Raw, bytes_received), 128);
            assert_eq!(offset_of!(Raw, min_rtt), 148);
            assert_eq!(offset_of!(Raw, delivery_rate), 160);
            assert_eq!(size_of::<Raw>(), 168);
            assert_eq!(offset_of!(Raw, rtt), offset_of!(libc::tcp_info, tcpi_rtt));
            assert_eq!(
                offset_of!(Raw, total_retrans),
                offset_of!(libc::tcp_info, tcpi_total_retrans)
            );
            assert_eq!(
                offset_of!(Raw, snd_cwnd),
                offset_of!(libc::tcp_info, tcpi_snd_cwnd)
            );
        }

        #[test]
        fn fields_beyond_what_the_kernel_wrote_are_none() {
            let raw = || Raw {
                bytes_acked: 7,
                delivery_rate: 9,
                ..Raw::default()
            };
            let short = raw().into_info(MIN_LEN);
            assert_eq!(short.bytes_acked, None);
            assert_eq!(short.delivery_rate, None);
            let mid = raw().into_info(offset_of!(Raw, bytes_received));
            assert_eq!(mid.bytes_acked, Some(7));
            assert_eq!(mid.bytes_received, None);
            let full = raw().into_info(size_of::<Raw>());
            assert_eq!(full.delivery_rate, Some(9));
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::os::fd::AsFd;

    use super::TcpInfo;

    pub(super) fn read(_socket: &impl AsFd) -> io::Result<TcpInfo> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_INFO is read on Linux only",
        ))
    }
}
