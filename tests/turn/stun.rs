//! A minimal STUN/TURN client over UDP (RFC 8489, RFC 8656), only as much as `tests/turn.rs`
//! needs: Binding, Allocate with long-term credentials, CreatePermission, Send and Data
//! indications. Every receive has a deadline.

use std::fmt;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha1::Sha1;

const MAGIC: u32 = 0x2112_a442;
const HEADER: usize = 20;

const BINDING: u16 = 0x001;
const ALLOCATE: u16 = 0x003;
const CREATE_PERMISSION: u16 = 0x008;
const SEND: u16 = 0x006;
const DATA: u16 = 0x007;

// Message classes, ORed into the method (every method used here is below 0x10).
const INDICATION: u16 = 0x0010;
const SUCCESS: u16 = 0x0100;
const ERROR: u16 = 0x0110;

const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const ERROR_CODE: u16 = 0x0009;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA_ATTR: u16 = 0x0013;
const REALM: u16 = 0x0014;
const NONCE: u16 = 0x0015;
const XOR_RELAYED_ADDRESS: u16 = 0x0016;
const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
const REQUESTED_TRANSPORT: u16 = 0x0019;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// How long a request waits for its answer.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// `N` bytes from the kernel's random source.
pub fn random<const N: usize>() -> [u8; N] {
    let mut out = [0; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("read /dev/urandom");
    out
}

/// Why a TURN exchange did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error response.
    Refused { code: u16, reason: String },
    /// No usable answer: timeout, I/O error, malformed or unauthenticated reply.
    Broken(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { code, reason } => write!(f, "error {code} ({reason})"),
            Failure::Broken(why) => write!(f, "no usable answer: {why}"),
        }
    }
}

fn broken(why: impl Into<String>) -> Failure {
    Failure::Broken(why.into())
}

/// A decoded or to-be-encoded STUN message.
#[derive(Debug, Clone)]
pub struct Message {
    kind: u16,
    tid: [u8; 12],
    /// Attributes with the offset of their header in `raw` (decoded messages only).
    attrs: Vec<(u16, Vec<u8>, usize)>,
    raw: Vec<u8>,
}

impl Message {
    fn new(kind: u16) -> Message {
        Message {
            kind,
            tid: random(),
            attrs: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn with(mut self, t: u16, v: impl Into<Vec<u8>>) -> Message {
        self.attrs.push((t, v.into(), 0));
        self
    }

    fn with_address(self, t: u16, addr: SocketAddr) -> Message {
        let v = xor_address(addr, &self.tid);
        self.with(t, v)
    }

    /// Wire form, with MESSAGE-INTEGRITY under `key` when given, and always a FINGERPRINT.
    fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&self.tid);
        for (t, v, _) in &self.attrs {
            push_attr(&mut out, *t, v);
        }
        if let Some(key) = key {
            // The length covers the MESSAGE-INTEGRITY attribute itself (RFC 8489 14.5).
            let len = out.len() - HEADER + 24;
            set_length(&mut out, len);
            let mac = hmac_sha1(key, &out);
            push_attr(&mut out, MESSAGE_INTEGRITY, &mac);
        }
        let len = out.len() - HEADER + 8;
        set_length(&mut out, len);
        let crc = crc32(&out) ^ FINGERPRINT_XOR;
        push_attr(&mut out, FINGERPRINT, &crc.to_be_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Result<Message, String> {
        if raw.len() < HEADER {
            return Err(format!("{} bytes is shorter than a STUN header", raw.len()));
        }
        let kind = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) != MAGIC {
            return Err("no STUN magic cookie".into());
        }
        if raw.len() != HEADER + len {
            return Err(format!(
                "length field {len} but {} bytes of attributes",
                raw.len() - HEADER
            ));
        }
        let mut tid = [0; 12];
        tid.copy_from_slice(&raw[8..HEADER]);
        let mut attrs = Vec::new();
        let mut off = HEADER;
        while off + 4 <= raw.len() {
            let t = u16::from_be_bytes([raw[off], raw[off + 1]]);
            let l = usize::from(u16::from_be_bytes([raw[off + 2], raw[off + 3]]));
            let v = raw
                .get(off + 4..off + 4 + l)
                .ok_or_else(|| format!("attribute 0x{t:04x} overruns the message"))?;
            attrs.push((t, v.to_vec(), off));
            off += 4 + l.next_multiple_of(4);
        }
        Ok(Message {
            kind,
            tid,
            attrs,
            raw: raw.to_vec(),
        })
    }

    fn get(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(at, _, _)| *at == t)
            .map(|(_, v, _)| v.as_slice())
    }

    fn error(&self) -> Option<(u16, String)> {
        let v = self.get(ERROR_CODE)?;
        if v.len() < 4 {
            return None;
        }
        let code = u16::from(v[2] & 0x7) * 100 + u16::from(v[3]);
        Some((code, String::from_utf8_lossy(&v[4..]).into_owned()))
    }

    fn address(&self, t: u16) -> Option<SocketAddr> {
        parse_xor_address(self.get(t)?, &self.tid)
    }

    /// Whether MESSAGE-INTEGRITY verifies under `key`; `None` when the message carries none.
    fn integrity_ok(&self, key: &[u8]) -> Option<bool> {
        let off = self
            .attrs
            .iter()
            .find(|(t, _, _)| *t == MESSAGE_INTEGRITY)
            .map(|(_, _, off)| *off)?;
        let mut covered = self.raw[..off].to_vec();
        set_length(&mut covered, off - HEADER + 24);
        Some(self.get(MESSAGE_INTEGRITY) == Some(&hmac_sha1(key, &covered)[..]))
    }

    /// Whether FINGERPRINT is right; `None` when the message carries none.
    fn fingerprint_ok(&self) -> Option<bool> {
        let off = self
            .attrs
            .iter()
            .find(|(t, _, _)| *t == FINGERPRINT)
            .map(|(_, _, off)| *off)?;
        let want = (crc32(&self.raw[..off]) ^ FINGERPRINT_XOR).to_be_bytes();
        Some(self.get(FINGERPRINT) == Some(&want[..]))
    }
}

fn push_attr(out: &mut Vec<u8>, t: u16, v: &[u8]) {
    let len = u16::try_from(v.len()).expect("attribute fits in a STUN message");
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(v);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn set_length(msg: &mut [u8], len: usize) {
    let len = u16::try_from(len).expect("message fits in a STUN message");
    msg[2..4].copy_from_slice(&len.to_be_bytes());
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// CRC-32 (IEEE 802.3, reflected), as STUN's FINGERPRINT uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The XOR key of an address: the magic cookie, then (IPv6 only) the transaction id.
fn xor_key(tid: &[u8; 12]) -> [u8; 16] {
    let mut key = [0; 16];
    key[..4].copy_from_slice(&MAGIC.to_be_bytes());
    key[4..].copy_from_slice(tid);
    key
}

fn xor_address(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let key = xor_key(tid);
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (1, ip.octets().to_vec()),
        IpAddr::V6(ip) => (2, ip.octets().to_vec()),
    };
    let mut v = vec![0, family];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend(ip.iter().zip(key).map(|(a, k)| a ^ k));
    v
}

fn parse_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let key = xor_key(tid);
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC >> 16) as u16;
    let ip = match v.get(1)? {
        1 => {
            let b: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|i| b[i] ^ key[i])))
        }
        2 => {
            let b: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|i| b[i] ^ key[i])))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The long-term credential state of an allocation.
struct Session {
    username: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: [u8; 16],
}

impl Session {
    fn auth(&self, msg: Message) -> Message {
        msg.with(USERNAME, self.username.as_bytes())
            .with(REALM, self.realm.clone())
            .with(NONCE, self.nonce.clone())
    }
}

/// One client transport (a UDP socket on loopback) talking to one TURN server.
pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    session: Option<Session>,
}

impl Client {
    /// A client on the loopback address of `server`'s family. Refuses any non-loopback server,
    /// so the tests cannot talk to anything off the machine.
    pub fn new(server: SocketAddr) -> Client {
        assert!(
            server.ip().is_loopback(),
            "the test client only talks to loopback, not {server}"
        );
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind {local}: {e}"));
        Client {
            sock,
            server,
            session: None,
        }
    }

    /// Sends `request` and returns the server's answer to it, success or error.
    fn exchange(&self, request: &Message, key: Option<&[u8]>, timeout: Duration) -> Result<Message, Failure> {
        self.sock
            .send_to(&request.encode(key), self.server)
            .map_err(|e| broken(format!("send to {}: {e}", self.server)))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(broken(format!("no answer from {} within {timeout:?}", self.server)));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| broken(e.to_string()))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(broken(format!("receive: {e}"))),
            };
            let Ok(reply) = Message::decode(&buf[..n]) else {
                continue;
            };
            if from != self.server || reply.tid != request.tid {
                continue;
            }
            if reply.fingerprint_ok() == Some(false) {
                return Err(broken("reply with a wrong FINGERPRINT"));
            }
            let method = request.kind;
            if reply.kind != method | SUCCESS && reply.kind != method | ERROR {
                return Err(broken(format!("unexpected reply type 0x{:04x}", reply.kind)));
            }
            return Ok(reply);
        }
    }

    /// An error reply as a [`Failure`], a success reply as itself.
    fn outcome(reply: Message) -> Result<Message, Failure> {
        if reply.kind & ERROR != ERROR {
            return Ok(reply);
        }
        match reply.error() {
            Some((code, reason)) => Err(Failure::Refused { code, reason }),
            None => Err(broken("error response without ERROR-CODE")),
        }
    }

    /// An authenticated transaction. A success must carry a valid MESSAGE-INTEGRITY; an error
    /// may omit it, but a wrong one is never accepted.
    fn authenticated(&self, request: Message) -> Result<Message, Failure> {
        let session = self.session.as_ref().ok_or_else(|| broken("no allocation"))?;
        let reply = self.exchange(&session.auth(request), Some(&session.key), TRANSACTION_TIMEOUT)?;
        verified(reply, &session.key)
    }

    /// A Binding request; the server-reflexive address on success.
    pub fn binding(&self, timeout: Duration) -> Result<SocketAddr, Failure> {
        let reply = Self::outcome(self.exchange(&Message::new(BINDING), None, timeout)?)?;
        reply
            .address(XOR_MAPPED_ADDRESS)
            .ok_or_else(|| broken("Binding success without XOR-MAPPED-ADDRESS"))
    }

    /// Allocates a UDP relay with TURN long-term credentials; the relayed address on success.
    /// `ipv6` asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY); without it coturn relays over
    /// IPv4, as for a browser.
    pub fn allocate(&mut self, username: &str, password: &str, ipv6: bool) -> Result<SocketAddr, Failure> {
        let request = || {
            let m = Message::new(ALLOCATE).with(REQUESTED_TRANSPORT, [17, 0, 0, 0]);
            if ipv6 {
                m.with(REQUESTED_ADDRESS_FAMILY, [2, 0, 0, 0])
            } else {
                m
            }
        };
        // The first, anonymous request only fetches the realm and a nonce.
        let challenge = self.exchange(&request(), None, TRANSACTION_TIMEOUT)?;
        match challenge.error() {
            Some((401, _)) => {}
            Some((code, reason)) => return Err(broken(format!("anonymous Allocate: {code} ({reason}), not 401"))),
            None => return Err(broken("anonymous Allocate succeeded")),
        }
        let realm = challenge
            .get(REALM)
            .ok_or_else(|| broken("401 without REALM"))?
            .to_vec();
        let mut nonce = challenge
            .get(NONCE)
            .ok_or_else(|| broken("401 without NONCE"))?
            .to_vec();
        // Long-term credential key: MD5(username ":" realm ":" password).
        let mut md5 = Md5::new();
        md5.update(username.as_bytes());
        md5.update(b":");
        md5.update(&realm);
        md5.update(b":");
        md5.update(password.as_bytes());
        let key: [u8; 16] = md5.finalize().into();
        // One retry on 438 Stale Nonce, with the nonce that answer carries.
        for _ in 0..2 {
            let session = Session {
                username: username.to_owned(),
                realm: realm.clone(),
                nonce: nonce.clone(),
                key,
            };
            let reply = self.exchange(&session.auth(request()), Some(&key), TRANSACTION_TIMEOUT)?;
            if let (Some((438, _)), Some(fresh)) = (reply.error(), reply.get(NONCE)) {
                nonce = fresh.to_vec();
                continue;
            }
            let reply = verified(reply, &key)?;
            let relayed = reply
                .address(XOR_RELAYED_ADDRESS)
                .ok_or_else(|| broken("Allocate success without XOR-RELAYED-ADDRESS"))?;
            self.session = Some(session);
            return Ok(relayed);
        }
        Err(broken("438 Stale Nonce twice in a row"))
    }

    /// Installs a permission for `peer` on the allocation.
    pub fn create_permission(&self, peer: IpAddr) -> Result<(), Failure> {
        // A permission covers the IP address only; the port is ignored.
        let request = Message::new(CREATE_PERMISSION).with_address(XOR_PEER_ADDRESS, SocketAddr::new(peer, 9));
        self.authenticated(request).map(drop)
    }

    /// Sends `data` to `peer` through the relay (a Send indication: no answer, no auth).
    pub fn send(&self, peer: SocketAddr, data: &[u8]) {
        assert!(
            peer.ip().is_loopback(),
            "the test relays only to loopback peers, not {peer}"
        );
        let msg = Message::new(SEND | INDICATION)
            .with_address(XOR_PEER_ADDRESS, peer)
            .with(DATA_ATTR, data);
        self.sock
            .send_to(&msg.encode(None), self.server)
            .unwrap_or_else(|e| panic!("send to {}: {e}", self.server));
    }

    /// The next Data indication: who sent it through the relay, and what.
    pub fn receive(&self, timeout: Duration) -> Result<(SocketAddr, Vec<u8>), Failure> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(broken(format!("no Data indication within {timeout:?}")));
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| broken(e.to_string()))?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(broken(format!("receive: {e}"))),
            };
            let Ok(msg) = Message::decode(&buf[..n]) else { continue };
            if from != self.server || msg.kind != DATA | INDICATION {
                continue;
            }
            let peer = msg
                .address(XOR_PEER_ADDRESS)
                .ok_or_else(|| broken("Data indication without XOR-PEER-ADDRESS"))?;
            let data = msg
                .get(DATA_ATTR)
                .ok_or_else(|| broken("Data indication without DATA"))?;
            return Ok((peer, data.to_vec()));
        }
    }
}

/// `reply` as an outcome, after checking its MESSAGE-INTEGRITY under `key`.
fn verified(reply: Message, key: &[u8]) -> Result<Message, Failure> {
    match (reply.integrity_ok(key), reply.kind & ERROR == ERROR) {
        (Some(false), _) => Err(broken(format!(
            "reply 0x{:04x} with a wrong MESSAGE-INTEGRITY",
            reply.kind
        ))),
        (None, false) => Err(broken("success reply without MESSAGE-INTEGRITY")),
        _ => Client::outcome(reply),
    }
}
