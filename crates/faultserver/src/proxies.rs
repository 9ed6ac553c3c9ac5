//! Real proxies from Debian for tests, started on a free loopback port and killed on drop:
//! tinyproxy (HTTP forward proxying and `CONNECT`, logging each request) and microsocks
//! (SOCKS5). Tests skip where they are not installed; CI installs them (`.ci/run`).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy process on `127.0.0.1:port`; killed, reaped and its directory removed on drop.
pub struct ProxyProcess {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its scratch directory (configuration, log).
    pub dir: PathBuf,
}

impl ProxyProcess {
    /// tinyproxy's log so far (`LogLevel Connect`: each connection and request line).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `bin` is installed where Debian puts it.
pub fn installed(bin: &str) -> bool {
    ["/usr/bin/", "/usr/sbin/", "/usr/local/bin/"]
        .iter()
        .any(|d| std::path::Path::new(&format!("{d}{bin}")).exists())
}

/// Whether a test that needs `what` must skip because it is not `available` here. Under CI
/// (the `CI` variable set), which installs everything, a missing one fails the test instead.
pub fn skip_unless(available: bool, what: &str, test: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {what} is not installed, and CI must run this test"
    );
    eprintln!("{test}: skipped, {what} is not installed");
    true
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "poolscope-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Waits (at most 2 s) until `port` accepts connections: that probe is one connection the
/// proxy sees. A probe that connected to itself (TCP's simultaneous open, possible while
/// nothing listens on the port) does not count.
fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(probe) = TcpStream::connect(("127.0.0.1", port)) {
            if probe.local_addr().ok() != probe.peer_addr().ok() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// tinyproxy with `extra` configuration lines (`BasicAuth user pw`, `ConnectPort 443`...).
pub fn tinyproxy(extra: &str) -> ProxyProcess {
    let dir = scratch("tinyproxy");
    let port = free_port();
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\n\
             LogLevel Connect\nMaxClients 100\nPidFile \"{}\"\n{extra}\n",
            dir.join("tinyproxy.log").display(),
            dir.join("tinyproxy.pid").display()
        ),
    )
    .expect("write tinyproxy.conf");
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tinyproxy");
    wait_listening(port);
    ProxyProcess { child, port, dir }
}

/// microsocks (SOCKS5, no authentication).
pub fn microsocks() -> ProxyProcess {
    let dir = scratch("microsocks");
    let port = free_port();
    let child = Command::new("microsocks")
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start microsocks");
    wait_listening(port);
    ProxyProcess { child, port, dir }
}
