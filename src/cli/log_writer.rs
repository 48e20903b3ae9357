//! The server's log on stderr, written in batches: a request line per proxied request is too
//! many writes (and, under systemd, too many journal messages) to make one by one. Lines at
//! INFO and below gather in a buffer that a thread writes out every [`PAUSE`] (or at once past
//! [`MAX_HELD`] bytes); a WARN or ERROR line is written at once, after what gathered before
//! it, so the order holds. [`flush`] writes what is left before the program ends.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long an INFO line may wait in the buffer.
const PAUSE: Duration = Duration::from_millis(100);
/// A buffer this large is written out at once.
const MAX_HELD: usize = 64 * 1024;

static SHARED: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
/// Whether the thread that writes the buffer out runs (else every line goes out at once).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The writer for `tracing_subscriber::fmt`; starts the thread that writes the buffer out.
#[derive(Clone)]
pub struct Batched {
    held: Arc<Mutex<Vec<u8>>>,
}

impl Batched {
    /// `batched`: start the thread that writes the buffer out; without it every line is
    /// written at once.
    pub fn start(batched: bool) -> Self {
        let held = SHARED
            .get_or_init(|| {
                let held = Arc::new(Mutex::new(Vec::with_capacity(if batched { MAX_HELD } else { 0 })));
                if batched {
                    let writer = held.clone();
                    let spawned = std::thread::Builder::new()
                        .name("server-log".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(PAUSE);
                                write_out(&mut lock(&writer));
                            }
                        });
                    match spawned {
                        Ok(_) => {
                            RUNNING.store(true, Ordering::Release);
                            // A panic's message comes after the lines that led to it.
                            let previous = std::panic::take_hook();
                            std::panic::set_hook(Box::new(move |info| {
                                // Never waits: the panic may have come while the lock was held.
                                if let Some(held) = SHARED.get()
                                    && let Ok(mut held) = held.try_lock()
                                {
                                    write_out(&mut held);
                                }
                                previous(info);
                            }));
                        }
                        Err(e) => eprintln!(
                            "milkcrate: no thread for the server log ({e}); lines are written one by one"
                        ),
                    }
                }
                held
            })
            .clone();
        Self { held }
    }
}

fn lock(held: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    held.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes the buffer to stderr while its lock is held, so no line overtakes it.
fn write_out(held: &mut Vec<u8>) {
    if held.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(held);
    let _ = err.flush();
    held.clear();
    if held.capacity() > 4 * MAX_HELD {
        held.shrink_to(MAX_HELD);
    }
}

/// Writes out what the buffer holds (before the program ends, or before a message printed
/// straight to stderr).
pub fn flush() {
    if let Some(held) = SHARED.get() {
        write_out(&mut lock(held));
    }
}

/// One formatted line on its way.
pub struct Line<'a> {
    held: &'a Mutex<Vec<u8>>,
    at_once: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut held = lock(self.held);
        held.extend_from_slice(bytes);
        if self.at_once || held.len() >= MAX_HELD {
            write_out(&mut held);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            held: &self.held,
            at_once: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Line {
            held: &self.held,
            at_once: at_once(meta.level()),
        }
    }
}

/// WARN and ERROR go out at once, and every line when no thread writes the buffer out.
fn at_once(level: &tracing::Level) -> bool {
    *level <= tracing::Level::WARN || !RUNNING.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_go_out_at_once_and_info_waits_for_the_batch() {
        assert!(at_once(&tracing::Level::ERROR) && at_once(&tracing::Level::WARN));
        RUNNING.store(true, Ordering::Release);
        assert!(!at_once(&tracing::Level::INFO) && !at_once(&tracing::Level::DEBUG));
        RUNNING.store(false, Ordering::Release);
        assert!(at_once(&tracing::Level::INFO), "no thread: nothing waits");

        let held = Mutex::new(Vec::new());
        let mut info = Line {
            held: &held,
            at_once: false,
        };
        info.write_all(b"held\n").expect("write");
        assert_eq!(&*lock(&held), b"held\n", "an INFO line waits");
        let mut warning = Line {
            held: &held,
            at_once: true,
        };
        warning.write_all(b"now\n").expect("write");
        assert!(
            lock(&held).is_empty(),
            "a warning writes out all before it, then itself"
        );
        info.write_all(&vec![b'x'; MAX_HELD]).expect("write");
        assert!(lock(&held).is_empty(), "a full buffer goes out at once");
    }
}
