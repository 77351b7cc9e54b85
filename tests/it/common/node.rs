//! A `botwire serve` child process for tests that kill and restart one:
//! started with a clean `BOTWIRE_*` environment on a loopback port, its log
//! appended to a file, the admin key it prints handed over on a channel,
//! and killed with SIGKILL when dropped.

use std::io::BufRead;
use std::time::{Duration, Instant};

/// A running `botwire serve`.
pub struct Node(std::process::Child);

impl Node {
    /// Starts `botwire serve` on `db` and `127.0.0.1:port` (loopback
    /// endpoints allowed) with `args` and `env` added, and waits until it
    /// listens. The receiver gets the admin key if the process prints one.
    pub fn start(
        db: &str,
        port: u16,
        log: std::path::PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Node, std::sync::mpsc::Receiver<String>) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_botwire"));
        for (k, _) in std::env::vars() {
            if k.starts_with("BOTWIRE_") {
                cmd.env_remove(k);
            }
        }
        let listen = format!("127.0.0.1:{port}");
        cmd.args([
            "serve",
            "--database",
            db,
            "--allow-net",
            "127.0.0.0/8",
            "--listen",
            &listen,
        ])
        .args(args)
        .env("BOTWIRE_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(file));
        let mut child = cmd.spawn().expect("spawn botwire");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let line = line.trim();
                if line.starts_with("bw_") && line.len() == 46 {
                    let _ = tx.send(line.to_owned());
                }
            }
        });
        let started = Instant::now();
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "botwire did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (Node(child), rx)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
