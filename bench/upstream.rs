//! `bench-upstream`: a tiny static HTTP/1.1 server for `bench/proxy.py`, so the benchmark measures
//! the proxy and not the upstream (busybox httpd closes every connection and forks per request).
//! Standard library only; `bench/proxy.py` compiles it with `rustc -O -C target-feature=+crt-static`
//! into one static file and `docker import`s it, so nothing is downloaded.
//!
//! Usage: `bench-upstream PORT`. Keep-alive, one thread per connection; `GET /big…` answers
//! 102,400 bytes, any other path 100 bytes. Request bodies (by `Content-Length`) are read and
//! ignored; `Connection: close` is honoured.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

const SMALL: usize = 100;
const BIG: usize = 100 * 1024;

fn response(len: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', len));
    r
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve(mut s: TcpStream, small: &[u8], big: &[u8]) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // One request head (and its body, skipped) at a time; pipelined requests stay in `buf`.
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let body_len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + body_len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..end + body_len);
        let path = head.split(' ').nth(1).unwrap_or("/");
        let answer = if path.rsplit('/').next().unwrap_or("").starts_with("big") {
            big
        } else {
            small
        };
        s.write_all(answer)?;
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || head.starts_with("GET / HTTP/1.0");
        if close {
            return Ok(());
        }
    }
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let small: &'static [u8] = Box::leak(response(SMALL).into_boxed_slice());
    let big: &'static [u8] = Box::leak(response(BIG).into_boxed_slice());
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || serve(s, small, big));
    }
}
