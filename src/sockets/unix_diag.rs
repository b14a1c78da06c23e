//! The kernel's `unix_diag` (`NETLINK_SOCK_DIAG`, see `sock_diag(7)`): every unix socket's
//! peer in the caller's network namespace.
//!
//! This module owns the wire encoding of the one request it sends and of the replies it
//! reads. Each C struct it touches (`nlmsghdr`, `unix_diag_req`, `unix_diag_msg`,
//! `nlattr`; `<linux/netlink.h>`, `<linux/unix_diag.h>`) is a Rust struct with explicit
//! `to_bytes`/`from_bytes` in native byte order, fields in declaration order, so no byte
//! offset is counted anywhere else. It asks for peers only, and does not know what a peer
//! means to a report.

use std::collections::HashMap;
use std::io;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink};

/// `SOCK_DIAG_BY_FAMILY`: the request type, and the type of each reply.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ROOT | NLM_F_MATCH`: every socket, not one.
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `udiag_show` bit: add a `UNIX_DIAG_PEER` attribute to connected sockets.
const UDIAG_SHOW_PEER: u32 = 0x4;
/// Attribute type: the peer's inode, a `u32`.
const UNIX_DIAG_PEER: u16 = 2;
const AF_UNIX: u8 = 1;

/// Netlink messages and attributes start on 4-byte boundaries (`NLMSG_ALIGN`, `NLA_ALIGN`).
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Reads the fields of a C struct in order, in native byte order.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.bytes().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.bytes().map(u32::from_ne_bytes)
    }
}

/// Writes the fields of a C struct in order into a buffer of its exact size.
struct Out<const N: usize> {
    buf: [u8; N],
    at: usize,
}

impl<const N: usize> Out<N> {
    fn new() -> Self {
        Out { buf: [0; N], at: 0 }
    }

    fn put(mut self, field: &[u8]) -> Self {
        self.buf[self.at..self.at + field.len()].copy_from_slice(field);
        self.at += field.len();
        self
    }

    fn done(self) -> [u8; N] {
        debug_assert_eq!(self.at, N, "every field of the struct is written");
        self.buf
    }
}

/// `struct nlmsghdr`: length (header included), type, flags, sequence, sender port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NlMsgHdr {
    len: u32,
    ty: u16,
    flags: u16,
    seq: u32,
    pid: u32,
}

impl NlMsgHdr {
    const LEN: usize = 16;

    fn to_bytes(self) -> [u8; Self::LEN] {
        Out::new()
            .put(&self.len.to_ne_bytes())
            .put(&self.ty.to_ne_bytes())
            .put(&self.flags.to_ne_bytes())
            .put(&self.seq.to_ne_bytes())
            .put(&self.pid.to_ne_bytes())
            .done()
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut f = Fields(b);
        Some(NlMsgHdr {
            len: f.u32()?,
            ty: f.u16()?,
            flags: f.u16()?,
            seq: f.u32()?,
            pid: f.u32()?,
        })
    }
}

/// `struct unix_diag_req`: which unix sockets to list and what to show of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnixDiagReq {
    family: u8,
    protocol: u8,
    /// A bit per socket state (`1 << TCP_ESTABLISHED`, …); all ones for every state.
    states: u32,
    /// One socket by inode, or 0 for any.
    ino: u32,
    /// `UDIAG_SHOW_*` bits.
    show: u32,
    cookie: [u32; 2],
}

impl UnixDiagReq {
    const LEN: usize = 24;

    fn to_bytes(self) -> [u8; Self::LEN] {
        Out::new()
            .put(&[self.family, self.protocol])
            .put(&[0, 0]) // pad
            .put(&self.states.to_ne_bytes())
            .put(&self.ino.to_ne_bytes())
            .put(&self.show.to_ne_bytes())
            .put(&self.cookie[0].to_ne_bytes())
            .put(&self.cookie[1].to_ne_bytes())
            .done()
    }
}

/// `struct unix_diag_msg`: one socket of the reply, followed by its attributes. The
/// whole layout is kept; the warden reads only `family` and `ino`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnixDiagMsg {
    family: u8,
    #[cfg_attr(not(test), allow(dead_code))]
    ty: u8,
    #[cfg_attr(not(test), allow(dead_code))]
    state: u8,
    ino: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    cookie: [u32; 2],
}

impl UnixDiagMsg {
    const LEN: usize = 16;

    #[cfg(test)]
    fn to_bytes(self) -> [u8; Self::LEN] {
        Out::new()
            .put(&[self.family, self.ty, self.state, 0])
            .put(&self.ino.to_ne_bytes())
            .put(&self.cookie[0].to_ne_bytes())
            .put(&self.cookie[1].to_ne_bytes())
            .done()
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut f = Fields(b);
        let (family, ty, state, _pad) = (f.u8()?, f.u8()?, f.u8()?, f.u8()?);
        Some(UnixDiagMsg {
            family,
            ty,
            state,
            ino: f.u32()?,
            cookie: [f.u32()?, f.u32()?],
        })
    }
}

/// `struct nlattr`: length (header included) and type, then the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NlAttr {
    len: u16,
    ty: u16,
}

impl NlAttr {
    const LEN: usize = 4;

    #[cfg(test)]
    fn to_bytes(self) -> [u8; Self::LEN] {
        Out::new()
            .put(&self.len.to_ne_bytes())
            .put(&self.ty.to_ne_bytes())
            .done()
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut f = Fields(b);
        Some(NlAttr {
            len: f.u16()?,
            ty: f.u16()?,
        })
    }
}

/// The whole request: a dump of every unix socket in every state, with peers.
fn request() -> Vec<u8> {
    let hdr = NlMsgHdr {
        len: u32::try_from(NlMsgHdr::LEN + UnixDiagReq::LEN).unwrap_or(u32::MAX),
        ty: SOCK_DIAG_BY_FAMILY,
        flags: NLM_F_REQUEST | NLM_F_DUMP,
        seq: 1,
        pid: 0, // the kernel
    };
    let req = UnixDiagReq {
        family: AF_UNIX,
        protocol: 0,
        states: u32::MAX,
        ino: 0,
        show: UDIAG_SHOW_PEER,
        cookie: [0; 2],
    };
    [&hdr.to_bytes()[..], &req.to_bytes()[..]].concat()
}

/// The attributes of one `unix_diag_msg`: `(type, payload)`.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let attr = NlAttr::from_bytes(b)?;
        let len = usize::from(attr.len);
        if len < NlAttr::LEN || len > b.len() {
            return None;
        }
        let payload = &b[NlAttr::LEN..len];
        b = b.get(align4(len)..).unwrap_or_default();
        Some((attr.ty, payload))
    })
}

/// What one datagram of the reply held.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    More,
    Done,
    Refused,
}

/// Adds the peers found in one datagram of the reply to `peers`.
fn read_batch(mut b: &[u8], peers: &mut HashMap<u64, u64>) -> Batch {
    while let Some(hdr) = NlMsgHdr::from_bytes(b) {
        let len = hdr.len as usize;
        if len < NlMsgHdr::LEN || len > b.len() {
            break;
        }
        match hdr.ty {
            NLMSG_DONE => return Batch::Done,
            NLMSG_ERROR => return Batch::Refused,
            SOCK_DIAG_BY_FAMILY => {
                let body = &b[NlMsgHdr::LEN..len];
                if let Some(msg) = UnixDiagMsg::from_bytes(body).filter(|m| m.family == AF_UNIX) {
                    let peer = attributes(&body[UnixDiagMsg::LEN..])
                        .find(|(ty, _)| *ty == UNIX_DIAG_PEER)
                        .and_then(|(_, p)| Fields(p).u32());
                    if let Some(peer) = peer {
                        peers.insert(u64::from(msg.ino), u64::from(peer));
                    }
                }
            }
            _ => {}
        }
        b = b.get(align4(len)..).unwrap_or_default();
    }
    Batch::More
}

/// Every unix socket's peer (inode → peer inode) in the warden's network namespace.
pub(super) fn unix_peers() -> io::Result<HashMap<u64, u64>> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::sendto(
        &fd,
        &request(),
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut peers = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, _) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        if n == 0 {
            return Ok(peers);
        }
        match read_batch(&buf[..n], &mut peers) {
            Batch::More => {}
            Batch::Done => return Ok(peers),
            Batch::Refused => {
                return Err(io::Error::other("sock_diag refused the unix_diag request"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_the_kernels_layout() {
        let r = request();
        assert_eq!(r.len(), 40);
        let hdr = NlMsgHdr::from_bytes(&r).unwrap();
        assert_eq!(hdr.len, 40);
        assert_eq!(hdr.ty, SOCK_DIAG_BY_FAMILY);
        assert_eq!(hdr.flags, NLM_F_REQUEST | NLM_F_DUMP);
        // unix_diag_req: family, protocol, 2 bytes of padding, then four u32 fields.
        assert_eq!(r[16..20], [AF_UNIX, 0, 0, 0]);
        assert_eq!(r[20..24], u32::MAX.to_ne_bytes());
        assert_eq!(r[24..28], 0u32.to_ne_bytes());
        assert_eq!(r[28..32], UDIAG_SHOW_PEER.to_ne_bytes());
        assert_eq!(r[32..40], [0; 8]);
    }

    fn message(ino: u32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = UnixDiagMsg {
            family: AF_UNIX,
            ty: 1,
            state: 1,
            ino,
            cookie: [7, 0],
        }
        .to_bytes()
        .to_vec();
        for (ty, payload) in attrs {
            let len = NlAttr::LEN + payload.len();
            body.extend(
                NlAttr {
                    len: u16::try_from(len).unwrap(),
                    ty: *ty,
                }
                .to_bytes(),
            );
            body.extend(*payload);
            body.resize(align4(body.len()), 0);
        }
        let hdr = NlMsgHdr {
            len: u32::try_from(NlMsgHdr::LEN + body.len()).unwrap(),
            ty: SOCK_DIAG_BY_FAMILY,
            flags: 2,
            seq: 1,
            pid: 0,
        };
        [&hdr.to_bytes()[..], &body].concat()
    }

    #[test]
    fn replies_yield_peers_and_stop_at_done() {
        let unaligned_name: &[u8] = b"/run/x.sock";
        let mut batch = message(
            10,
            &[(0, unaligned_name), (UNIX_DIAG_PEER, &11u32.to_ne_bytes())],
        );
        batch.extend(message(12, &[]));
        batch.extend(message(11, &[(UNIX_DIAG_PEER, &10u32.to_ne_bytes())]));
        let mut peers = HashMap::new();
        assert_eq!(read_batch(&batch, &mut peers), Batch::More);
        assert_eq!(peers, [(10, 11), (11, 10)].into_iter().collect());

        let done = NlMsgHdr {
            len: 20,
            ty: NLMSG_DONE,
            flags: 2,
            seq: 1,
            pid: 0,
        };
        let mut end = done.to_bytes().to_vec();
        end.extend(0u32.to_ne_bytes());
        assert_eq!(read_batch(&end, &mut peers), Batch::Done);
        // A truncated message ends the batch without a panic.
        assert_eq!(read_batch(&batch[..20], &mut HashMap::new()), Batch::More);
    }

    #[test]
    fn the_kernel_answers_for_this_namespace() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |s: &std::os::unix::net::UnixStream| {
            use std::os::fd::AsFd;
            rustix::fs::fstat(s.as_fd()).unwrap().st_ino
        };
        let peers = unix_peers().unwrap();
        assert_eq!(peers.get(&ino(&a)), Some(&ino(&b)));
        assert_eq!(peers.get(&ino(&b)), Some(&ino(&a)));
    }
}
