//! The cluster DNS as nginx's own resolver sees it: a UDP server that knows exactly one name,
//! the fully-qualified `<svc>.<ns>.svc.<cluster domain>` of prosody's Service, and answers
//! NXDOMAIN for everything else. nginx's `resolver` sends names as written, with no search
//! list, so a shorter name fails here as it fails against CoreDNS. Every query is recorded.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const TYPE_A: u16 = 1;

pub struct Stub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// Reads a query's first question: (name, type, end offset of the question).
fn question(msg: &[u8]) -> Option<(String, u16, usize)> {
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *msg.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn answer(query: &[u8], name: &str, address: Ipv4Addr) -> Option<(Vec<u8>, String)> {
    if query.len() < 12 {
        return None;
    }
    let (qname, qtype, end) = question(query)?;
    let known = qname == name;
    let mut out = query[..end].to_vec();
    // QR, opcode and RD from the query, RA; NXDOMAIN for unknown names.
    out[2] = 0x80 | (query[2] & 0x79);
    out[3] = 0x80 | if known { 0 } else { 3 };
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    if known && qtype == TYPE_A {
        out[7] = 1;
        out.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        out.extend_from_slice(&address.octets());
    }
    let verdict = match (known, qtype) {
        (true, TYPE_A) => format!("A {address}"),
        (true, _) => "NODATA".into(),
        (false, _) => "NXDOMAIN".into(),
    };
    Some((out, format!("{qname} type {qtype}: {verdict}")))
}

impl Stub {
    /// Serves on `listen` (port 53 of an address in the namespace) until dropped.
    pub fn start(listen: SocketAddr, name: &str, address: Ipv4Addr) -> Stub {
        let socket = UdpSocket::bind(listen).unwrap_or_else(|e| panic!("DNS stub on {listen}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (s, q, name) = (stop.clone(), queries.clone(), name.to_ascii_lowercase());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((reply, log)) = answer(&buf[..n], &name, address) {
                    q.lock().expect("lock").push(log);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Stub {
            addr: listen,
            stop,
            queries,
            thread: Some(thread),
        }
    }

    /// The queries seen so far, as `name type N: answer` lines.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().expect("lock").clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the receive loop, which then sees the flag.
        if let Ok(s) = UdpSocket::bind((self.addr.ip(), 0)) {
            let _ = s.send_to(&[0], self.addr);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn answers_only_the_fully_qualified_name() {
    // A query for `name` (id 0x1234, RD), type A.
    let query = |name: &str, qtype: u16| {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    };
    let fqdn = "meet-prosody.conf.svc.cluster.local";
    let ip = Ipv4Addr::new(192, 0, 2, 80);
    let (reply, log) = answer(&query(fqdn, TYPE_A), fqdn, ip).expect("reply");
    assert_eq!((reply[3] & 0x0f, reply[7]), (0, 1), "NOERROR with one answer: {log}");
    assert_eq!(&reply[reply.len() - 4..], &ip.octets());
    let (reply, log) = answer(&query("meet-prosody.conf.svc", TYPE_A), fqdn, ip).expect("reply");
    assert_eq!((reply[3] & 0x0f, reply[7]), (3, 0), "NXDOMAIN: {log}");
    let (reply, _) = answer(&query(fqdn, 28), fqdn, ip).expect("reply");
    assert_eq!((reply[3] & 0x0f, reply[7]), (0, 0), "no AAAA record");
}
