//! A real Node.js `http` server for end-to-end tests: plain HTTP/1.1 on a free loopback
//! port, every request answered `200 ok` once its body has arrived, and a log with one line
//! per request (`METHOD URL`) written when the request's body ended, so a POST that reached
//! the server twice shows twice.
//!
//! The keep-alive timeout is the server's own idle timer on each socket: Node 20 adds a
//! second to `server.keepAliveTimeout` before it closes an idle connection, so the script
//! turns Node's off and destroys a socket itself after `keepalive_ms` without reads or
//! writes, as a server with that keep-alive timeout does.
//!
//! Node runs as a child process that is killed and reaped on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"
const http = require('http');
const fs = require('fs');
const ka = parseInt(process.argv[2], 10);
const log = fs.openSync(process.argv[3], 'a');
const server = http.createServer((req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    fs.writeSync(log, req.method + ' ' + req.url + '\n');
    res.writeHead(200, {'content-type': 'text/plain', 'content-length': '3'});
    res.end('ok\n');
  });
});
server.keepAliveTimeout = 0;
server.on('connection', (socket) => {
  socket.setTimeout(ka, () => socket.destroy());
});
server.listen(0, '127.0.0.1', () => {
  console.log(server.address().port);
});
"#;

/// Whether `node` is installed (tests skip without it).
pub fn available() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A running Node.js server; killed and reaped on drop.
pub struct Node {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Node {
    /// Starts the server with an idle timeout of `keepalive_ms` per connection.
    pub fn start(keepalive_ms: u32) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "poolscope-node-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("node temp dir");
        let script = dir.join("server.js");
        std::fs::write(&script, SCRIPT).expect("write server.js");
        let log = dir.join("requests.log");
        let mut child = Command::new("node")
            .arg(&script)
            .arg(keepalive_ms.to_string())
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().expect("node stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read node's port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("node printed {line:?}, not a port"));
        Node { child, port, log }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> http::Uri {
        format!("http://127.0.0.1:{}{path}", self.port)
            .parse()
            .expect("valid URI")
    }

    /// The requests the server handled (`METHOD URL`), once at least `completed` are logged
    /// and the log stopped growing for 100 ms (at most 5 s in all).
    pub fn requests(&self, completed: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let read = || std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut text = read();
        let mut steady = Instant::now();
        while Instant::now() < deadline {
            if text.lines().count() >= completed && steady.elapsed() >= Duration::from_millis(100) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            let now = read();
            if now.len() != text.len() {
                steady = Instant::now();
                text = now;
            }
        }
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
