//! For tests (the host's and the component's): a throwaway
//! `redis-server` on a free loopback port, without persistence, killed when
//! dropped. Tests that need one skip (and say so
//! loudly) when `redis-server` is not on `PATH`; `scripts/ensure-redis`
//! installs it.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports tried before giving up (another process may take a free port
/// between our probe and the server's bind).
const START_ATTEMPTS: usize = 3;

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server, or prints why `test` is skipped and returns `None`
    /// when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<RedisServer> {
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
        for _ in 0..START_ATTEMPTS {
            match Self::try_start() {
                Ok(server) => return Some(server),
                Err(err) => failures.push(err),
            }
        }
        panic!("redis-server did not start: {failures:?}");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server and starts a fresh, empty one on the same port.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.addr.port()).expect("redis-server restarts");
        self.wait_until_up().expect("redis-server restarts");
    }

    fn try_start() -> Result<RedisServer, String> {
        let port = free_port().map_err(|err| format!("no free port: {err}"))?;
        let mut server = RedisServer {
            child: spawn(port)?,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        server.wait_until_up()?;
        Ok(server)
    }

    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("redis-server did not accept connections in time".to_owned())
    }
}

/// `redis-server` on loopback `port`, without persistence.
fn spawn(port: u16) -> Result<Child, String> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("spawning redis-server: {err}"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
