//! `bench-upstream`: a tiny static HTTP/1.1 server for `bench/proxy.py`, so the benchmark measures
//! the proxy and not the upstream (busybox httpd closes every connection and forks per request).
//! Standard library plus three epoll calls of the C library; `bench/proxy.py` compiles it with
//! `rustc -O -C target-feature=+crt-static` into one static file and `docker import`s it, so
//! nothing is downloaded.
//!
//! Usage: `bench-upstream PORT [THREADS]`. Keep-alive; each thread runs one epoll loop over
//! non-blocking sockets (a container's pids limit allows no thread per connection). A request
//! whose path's last segment starts with `big` gets 102,400 bytes, any other 100 bytes. Request
//! bodies (by `Content-Length`) are read and ignored; `Connection: close` is honoured. For the
//! router's tests: a last segment starting with `conn` gets the connection's number (1 for the
//! first one accepted), one starting with `bye` gets 100 bytes, after which the server
//! closes the connection without having said so (as an app's keep-alive timeout does), and one
//! starting with `extra` gets 100 bytes and, 50 ms later, a second answer (`WRONG`) that no
//! request asked for (this thread waits for it). One starting with `badchunk` gets a chunked
//! answer whose first chunk size is not hexadecimal, and one starting with `late` a chunked
//! `hello` whose trailer section never ends.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Connections accepted so far, by all threads.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

const SMALL: usize = 100;
const BIG: usize = 100 * 1024;

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct EpollEvent {
    events: u32,
    data: u64,
}

unsafe extern "C" {
    fn epoll_create1(flags: i32) -> i32;
    fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut EpollEvent) -> i32;
    fn epoll_wait(epfd: i32, events: *mut EpollEvent, maxevents: i32, timeout: i32) -> i32;
}

const EPOLLIN: u32 = 0x1;
const EPOLLOUT: u32 = 0x4;
const EPOLLEXCLUSIVE: u32 = 1 << 28;
const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;

fn ctl(ep: i32, op: i32, fd: i32, events: u32) {
    let mut ev = EpollEvent {
        events,
        data: fd as u64,
    };
    // SAFETY: a valid epoll descriptor and a live event struct.
    unsafe { epoll_ctl(ep, op, fd, &mut ev) };
}

fn response(len: usize) -> &'static [u8] {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', len));
    Box::leak(r.into_boxed_slice())
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

struct Conn {
    /// This connection's number.
    id: u64,
    stream: TcpStream,
    input: Vec<u8>,
    output: VecDeque<(Cow<'static, [u8]>, usize)>,
    close_after: bool,
    /// Write a second answer nobody asked for, 50 ms after this one.
    stray: bool,
}

impl Conn {
    /// Answers every complete request in `input`. False: close the connection.
    fn parse(&mut self, small: &'static [u8], big: &'static [u8]) -> bool {
        loop {
            let Some(i) = find(&self.input, b"\r\n\r\n") else {
                return true;
            };
            let end = i + 4;
            let head = String::from_utf8_lossy(&self.input[..end]).into_owned();
            let body_len: usize = header(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if self.input.len() < end + body_len {
                return true;
            }
            self.input.drain(..end + body_len);
            let path = head.split(' ').nth(1).unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            let last = path.rsplit('/').next().unwrap_or("");
            let answer: Cow<'static, [u8]> = if last.starts_with("big") {
                Cow::Borrowed(big)
            } else if last.starts_with("conn") {
                let id = self.id.to_string();
                Cow::Owned(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{id}", id.len())
                        .into_bytes(),
                )
            } else if last.starts_with("badchunk") {
                Cow::Borrowed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            } else if last.starts_with("late") {
                // The trailer section is never ended.
                Cow::Borrowed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Late: 1\r\n")
            } else {
                Cow::Borrowed(small)
            };
            self.output.push_back((answer, 0));
            if last.starts_with("extra") {
                self.stray = true;
            }
            if last.starts_with("bye") {
                self.close_after = true;
                return true;
            }
            if header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                self.close_after = true;
                return true;
            }
        }
    }

    /// Writes what it can. Ok(true): all written.
    fn flush(&mut self) -> std::io::Result<bool> {
        while let Some((buf, off)) = self.output.front_mut() {
            match self.stream.write(&buf[*off..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    *off += n;
                    if *off == buf.len() {
                        self.output.pop_front();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

fn run(listener: &TcpListener, small: &'static [u8], big: &'static [u8]) {
    // SAFETY: plain system call.
    let ep = unsafe { epoll_create1(0) };
    let lfd = listener.as_raw_fd();
    ctl(ep, EPOLL_CTL_ADD, lfd, EPOLLIN | EPOLLEXCLUSIVE);
    let mut conns: HashMap<i32, Conn> = HashMap::new();
    let mut events = vec![EpollEvent { events: 0, data: 0 }; 256];
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // SAFETY: the buffer holds `events.len()` entries.
        let n = unsafe { epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.data as i32;
            let flags = ev.events;
            if fd == lfd {
                while let Ok((s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    let cfd = s.as_raw_fd();
                    ctl(ep, EPOLL_CTL_ADD, cfd, EPOLLIN);
                    conns.insert(
                        cfd,
                        Conn {
                            id: ACCEPTED.fetch_add(1, Ordering::Relaxed) + 1,
                            stream: s,
                            input: Vec::new(),
                            output: VecDeque::new(),
                            close_after: false,
                            stray: false,
                        },
                    );
                }
                continue;
            }
            let Some(c) = conns.get_mut(&fd) else { continue };
            let mut alive = true;
            if flags & EPOLLIN != 0 {
                loop {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => {
                            alive = false;
                            break;
                        }
                        Ok(k) => c.input.extend_from_slice(&chunk[..k]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                alive &= c.parse(small, big);
            }
            let done = match c.flush() {
                Ok(d) => d,
                Err(_) => {
                    alive = false;
                    true
                }
            };
            if done && c.stray {
                c.stray = false;
                std::thread::sleep(std::time::Duration::from_millis(50));
                let _ = c
                    .stream
                    .write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG");
            }
            if done && c.close_after {
                alive = false;
            }
            if !alive {
                ctl(ep, EPOLL_CTL_DEL, fd, 0);
                conns.remove(&fd);
            } else {
                ctl(
                    ep,
                    EPOLL_CTL_MOD,
                    fd,
                    if done { EPOLLIN } else { EPOLLIN | EPOLLOUT },
                );
            }
        }
    }
}

fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = listener.set_nonblocking(true) {
        eprintln!("cannot make the listener non-blocking: {e}");
        std::process::exit(1);
    }
    let listener: &'static TcpListener = Box::leak(Box::new(listener));
    let (small, big) = (response(SMALL), response(BIG));
    let workers: Vec<_> = (1..threads)
        .map(|_| std::thread::spawn(move || run(listener, small, big)))
        .collect();
    run(listener, small, big);
    for w in workers {
        let _ = w.join();
    }
}
