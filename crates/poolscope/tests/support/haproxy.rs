//! A real HAProxy (Debian's `haproxy`) for end-to-end tests: a frontend on a free loopback
//! port (HTTP/1.1, or h2c with prior knowledge) that closes client connections idle for
//! longer than its `timeout http-keep-alive`, in front of one backend server.
//!
//! HAProxy runs in the foreground (`-db`) as a child process that is killed and reaped on
//! drop; its files live in a fresh temp dir that is removed then.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::nginx::{free_port, fresh_dir, read_lossy, wait_listening};

const BINARY: &str = "/usr/sbin/haproxy";

/// Whether haproxy is installed (tests skip without it).
pub fn available() -> bool {
    Path::new(BINARY).is_file()
}

/// A running HAProxy; killed, reaped and its temp dir removed on drop.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Haproxy {
    /// Starts HAProxy in front of `backend` (`127.0.0.1:PORT`), closing client connections
    /// idle for `keepalive_ms`; `h2c` makes the frontend speak HTTP/2 with prior knowledge.
    pub fn start(backend: SocketAddr, keepalive_ms: u32, h2c: bool) -> Haproxy {
        let dir = fresh_dir();
        let proto = if h2c { " proto h2" } else { "" };
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("haproxy.cfg");
            std::fs::write(
                &conf,
                format!(
                    "global\n    maxconn 4096\n\
                     defaults\n    mode http\n    option http-keep-alive\n    \
                     timeout connect 2s\n    timeout client 20s\n    timeout server 20s\n    \
                     timeout http-keep-alive {keepalive_ms}ms\n\
                     frontend fe\n    bind 127.0.0.1:{port}{proto}\n    default_backend be\n\
                     backend be\n    server s1 {backend}\n"
                ),
            )
            .expect("write haproxy.cfg");
            let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
            let mut child = Command::new(BINARY)
                .arg("-db")
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn haproxy");
            let outcome = wait_listening(&mut child, port, Duration::from_secs(5), "haproxy");
            match outcome {
                Ok(()) => return Haproxy { child, dir, port },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = read_lossy(&dir.join("stderr.log"));
                    last = format!("{why}; stderr:\n{log}");
                    if log.contains("Address already in use") || log.contains("cannot bind") {
                        continue;
                    }
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("haproxy did not start: {last}");
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> http::Uri {
        format!("http://127.0.0.1:{}{path}", self.port)
            .parse()
            .expect("valid URI")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
