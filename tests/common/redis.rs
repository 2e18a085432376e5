//! A throwaway `redis-server` for the tests that need a real Redis
//! (`tests/redis.rs`, `tests/spin.rs`); they skip, saying so, without one.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway `redis-server`, killed on drop.
pub struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    /// Starts a server, or prints why `test` is skipped and returns `None`
    /// when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<Redis> {
        if !on_path("redis-server") {
            // Straight to the process's stderr, past the test harness's
            // capture, so the skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "*** SKIPPED {test}: redis-server is not on PATH (scripts/ensure-redis installs it) ***"
            );
            return None;
        }
        let mut failures = Vec::new();
        // A free port can be taken between the probe and the server's bind.
        for _ in 0..3 {
            match Redis::try_start() {
                Ok(redis) => return Some(redis),
                Err(err) => failures.push(err),
            }
        }
        panic!("redis-server did not start: {failures:?}");
    }

    fn try_start() -> Result<Redis, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|err| format!("no free port: {err}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("spawning redis-server: {err}"))?;
        let mut redis = Redis {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&redis.addr, Duration::from_millis(200)).is_ok() {
                return Ok(redis);
            }
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not accept connections in time".to_owned())
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
