//! An origin that keeps the raw bytes of every request head it receives,
//! exactly as they came on the wire (no HTTP library between the socket
//! and the record), and answers each with `200 OK` and a body naming it.
//! Connections are kept alive: several requests per connection, with a
//! `content-length` (or chunked) body read and its length recorded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request head is not read past this many bytes: the connection is dropped.
pub const MAX_HEAD: usize = 1 << 20;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The first line, without its line ending (lossy UTF-8).
    pub request_line: String,
    pub method: String,
    /// The request target, bytes as received (lossy UTF-8).
    pub target: String,
    pub version: String,
    /// Every header line in the order received, names as received, values
    /// trimmed of surrounding whitespace.
    pub headers: Vec<(String, String)>,
    /// The whole head, bytes as received (up to and including the empty line).
    pub raw_head: Vec<u8>,
    /// The length of the body read after the head.
    pub body_len: usize,
}

impl RawRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The target's path: the target up to `?`.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(p, _)| p)
    }
}

/// A running raw origin; its thread lives as long as the test process.
#[derive(Clone)]
pub struct RawOrigin {
    name: String,
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
}

impl RawOrigin {
    /// Binds 127.0.0.1:0 and serves on a thread of its own (one more per
    /// connection).
    pub fn start(name: &str) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a raw origin");
        let origin = RawOrigin {
            name: name.to_string(),
            addr: listener.local_addr().unwrap(),
            requests: Default::default(),
        };
        let serving = origin.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let serving = serving.clone();
                std::thread::spawn(move || serving.serve(stream));
            }
        });
        origin
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in the order received.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The last request received; panics when there is none.
    pub fn last(&self) -> RawRequest {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("origin {} received no request", self.name))
    }

    /// The targets received so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.target).collect()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    fn serve(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
        let mut buf: Vec<u8> = Vec::new();
        loop {
            // The head: up to the first empty line.
            let head_end = loop {
                if let Some(end) = head_end(&buf) {
                    break end;
                }
                if buf.len() > MAX_HEAD {
                    return;
                }
                if !fill(&mut stream, &mut buf) {
                    return;
                }
            };
            let raw_head: Vec<u8> = buf.drain(..head_end).collect();
            let mut request = parse_head(raw_head);
            // The body: content-length, or chunked.
            let chunked = request
                .header_all("transfer-encoding")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("chunked"));
            let body_len = if chunked {
                match read_chunked(&mut stream, &mut buf) {
                    Some(n) => n,
                    None => return,
                }
            } else {
                let length: usize = request
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < length {
                    if !fill(&mut stream, &mut buf) {
                        return;
                    }
                }
                buf.drain(..length);
                length
            };
            request.body_len = body_len;
            let close = request
                .header_all("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("close"));
            self.requests.lock().unwrap().push(request);
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{}",
                self.name.len(),
                self.name
            );
            if stream.write_all(answer.as_bytes()).is_err() || close {
                return;
            }
        }
    }
}

/// Reads more bytes into `buf`; false at the end of the stream or on an error.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Where the head in `buf` ends (after its empty line), if it is all there.
/// A bare `\n` line ending is accepted as well as `\r\n`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + offset;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

fn parse_head(raw_head: Vec<u8>) -> RawRequest {
    let text = String::from_utf8_lossy(&raw_head).into_owned();
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.splitn(3, ' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let version = parts.next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect();
    RawRequest {
        request_line,
        method,
        target,
        version,
        headers,
        raw_head,
        body_len: 0,
    }
}

/// Reads a chunked body from `buf` and the stream (trailers skipped); the
/// body's length, or None when the stream ends first.
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut total = 0;
    loop {
        let line = read_line(stream, buf)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                if read_line(stream, buf)?.is_empty() {
                    return Some(total);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf) {
                return None;
            }
        }
        buf.drain(..size + 2);
        total += size;
    }
}

fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            return Some(line);
        }
        if buf.len() > MAX_HEAD || !fill(stream, buf) {
            return None;
        }
    }
}
