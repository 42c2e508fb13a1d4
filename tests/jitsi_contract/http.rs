//! The HTTP side of the web check: a stand-in prosody (BOSH and the XMPP websocket, enough to
//! prove that a request reached it) and the client requests sent to nginx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// Header the stand-in sets on every answer: only a response carrying it came from prosody's
/// stand-in, not from nginx.
pub const MARK: &str = "x-conclave-standin";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn ws_accept(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A request as the stand-in received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seen {
    pub target: String,
    pub host: String,
}

pub struct Standin {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let start = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).ok()? == 0 {
            return None;
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Some((start, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// One unmasked (server) or masked (client) text frame.
fn frame(payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let mut out = vec![0x81, payload.len() as u8 | if mask.is_some() { 0x80 } else { 0 }];
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads one frame and returns its (unmasked) payload.
fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            r.read_exact(&mut l)?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            r.read_exact(&mut l)?;
            usize::try_from(u64::from_be_bytes(l)).map_err(std::io::Error::other)?
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        r.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    if head[1] & 0x80 != 0 {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    }
    Ok(payload)
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let (start, headers) = read_head(&mut reader)?;
    let target = start.split_whitespace().nth(1)?.to_string();
    let host = header(&headers, "host").unwrap_or_default().to_string();
    seen.lock().ok()?.push(Seen {
        target: target.clone(),
        host,
    });
    let mut out = stream;
    if target.starts_with("/xmpp-websocket")
        && header(&headers, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
    {
        let accept = ws_accept(header(&headers, "sec-websocket-key")?);
        write!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: xmpp\r\n{MARK}: prosody\r\n\r\n"
        )
        .ok()?;
        let got = read_frame(&mut reader).ok()?;
        let mut echo = b"standin:".to_vec();
        echo.extend_from_slice(&got);
        out.write_all(&frame(&echo, None)).ok()?;
    } else {
        let body = "<body xmlns='http://jabber.org/protocol/httpbind' type='terminate'/>";
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n{MARK}: prosody\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
    }
    Some(())
}

impl Standin {
    pub fn start(listen: SocketAddr) -> Standin {
        let listener = TcpListener::bind(listen).unwrap_or_else(|e| panic!("stand-in prosody on {listen}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, q) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(stream) = stream {
                    let q = q.clone();
                    std::thread::spawn(move || serve(stream, &q));
                }
            }
        });
        Standin {
            stop,
            seen,
            thread: Some(thread),
            addr: listen,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a client got back from nginx.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// For a websocket: the payload the server sent back after the upgrade.
    pub echo: Option<String>,
    pub error: Option<String>,
}

impl Reply {
    pub fn came_from_standin(&self) -> bool {
        self.headers.iter().any(|(k, v)| k == MARK && v == "prosody")
    }
}

fn request(addr: SocketAddr, head: &str, websocket: bool) -> std::io::Result<Reply> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = stream.try_clone()?;
    w.write_all(head.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let Some((start, headers)) = read_head(&mut reader) else {
        return Err(std::io::Error::other("no response head"));
    };
    let status = start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut reply = Reply {
        status,
        headers,
        ..Reply::default()
    };
    if websocket && status == 101 {
        w.write_all(&frame(
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            Some([1, 2, 3, 4]),
        ))?;
        reply.echo = Some(String::from_utf8_lossy(&read_frame(&mut reader)?).into_owned());
    } else {
        let mut body = Vec::new();
        // A keep-alive reply (nginx's 502 to an upgrade) ends where its length says.
        match header(&reply.headers, "content-length").and_then(|l| l.parse::<usize>().ok()) {
            Some(len) => {
                body.resize(len, 0);
                reader.read_exact(&mut body)?;
            }
            None => {
                let _ = reader.read_to_end(&mut body);
            }
        }
        let chunked = header(&reply.headers, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if chunked {
            body = dechunk(&body).ok_or_else(|| std::io::Error::other("malformed chunked body"))?;
        }
        reply.body = String::from_utf8_lossy(&body).into_owned();
    }
    Ok(reply)
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// `GET target` with `Host: host`; errors are part of the reply.
pub fn get(addr: SocketAddr, host: &str, target: &str) -> Reply {
    let head = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    request(addr, &head, false).unwrap_or_else(|e| Reply {
        error: Some(e.to_string()),
        ..Reply::default()
    })
}

/// A websocket upgrade on `target`, then one frame each way.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub fn websocket(addr: SocketAddr, host: &str, target: &str) -> Reply {
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
    );
    request(addr, &head, true).unwrap_or_else(|e| Reply {
        error: Some(e.to_string()),
        ..Reply::default()
    })
}

/// The `Sec-WebSocket-Accept` a server must answer [`WS_KEY`] with.
pub fn expected_accept() -> String {
    ws_accept(WS_KEY)
}

#[test]
fn chunked_bodies_and_websocket_frames_round_trip() {
    assert_eq!(
        dechunk(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").as_deref(),
        Some(&b"Wikipedia"[..])
    );
    assert_eq!(dechunk(b"9\r\nshort\r\n"), None);
    let masked = frame(b"<open/>", Some([9, 8, 7, 6]));
    assert_eq!(read_frame(&mut &masked[..]).expect("frame"), b"<open/>");
    let mut long = vec![0x81, 126, 0, 200];
    long.extend(std::iter::repeat_n(b'x', 200));
    assert_eq!(read_frame(&mut &long[..]).expect("frame").len(), 200);
    assert_eq!(ws_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
