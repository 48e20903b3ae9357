//! SIGTERM stops the real `milkcrate serve` (issue 13.6: it must always stop it; the unit test
//! in `cli/serve.rs` shows a stuck blocking task cannot keep the process alive).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;

#[test]
fn sigterm_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = milkcrate_command()
        .env("MILKCRATE_DATA_DIR", dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("listening on") => break,
            _ if started.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
                panic!("milkcrate did not start");
            }
            _ => {}
        }
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("milkcrate serve was still running 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
