//! A real Apache httpd 2.4 (Debian's `apache2`: mpm_event, mod_ssl, mod_http2) for
//! end-to-end tests: TLS with the nginx harness's generated CA and leaf, `Protocols h2
//! http/1.1`, one static file for every path (`GET` 200; a `POST` to it is 405), an access log with one line per request (`METHOD PATH STATUS
//! PROTOCOL`), and graceful restarts (`SIGUSR1`, what `apachectl graceful` and Debian's
//! daily logrotate send).
//!
//! httpd runs in the foreground (`-DFOREGROUND`) as a child process that is killed and
//! reaped on drop; its files live in a fresh temp dir that is removed then.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nginx::{certificates_with_ca_pem, free_port, fresh_dir, read_lossy, wait_listening};

const BINARY: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";

/// Whether apache2 with mod_http2 is installed (tests skip without it).
pub fn available() -> bool {
    Path::new(BINARY).is_file() && Path::new(MODULES).join("mod_http2.so").is_file()
}

/// A running httpd; killed, reaped and its temp dir removed on drop.
pub struct Apache {
    child: Child,
    dir: PathBuf,
    port: u16,
    ca_der: rustls::pki_types::CertificateDer<'static>,
}

fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"ServerRoot "{d}"
ServerName localhost
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
Mutex file:{d}
Listen 127.0.0.1:{port}
User www-data
Group www-data
LoadModule mpm_event_module {MODULES}/mod_mpm_event.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule ssl_module {MODULES}/mod_ssl.so
LoadModule http2_module {MODULES}/mod_http2.so
LoadModule alias_module {MODULES}/mod_alias.so
ErrorLog {d}/error.log
LogLevel warn
LogFormat "%m %U %>s %H" poolscope
CustomLog {d}/access.log poolscope
DocumentRoot {d}/www
AliasMatch "^/." "{d}/www/index.html"
<Directory {d}/www>
    Require all granted
</Directory>
Protocols h2 http/1.1
KeepAliveTimeout 5
SSLEngine on
SSLCertificateFile {d}/leaf.pem
SSLCertificateKeyFile {d}/leaf.key
SSLSessionCache none
"#
    )
}

impl Apache {
    /// Starts httpd and waits (at most ~10 s) until its port accepts connections.
    pub fn start() -> Apache {
        let dir = fresh_dir();
        let (ca_der, ca_pem, leaf_pem, leaf_key) = certificates_with_ca_pem();
        std::fs::write(dir.join("ca.pem"), ca_pem).expect("write ca.pem");
        std::fs::write(dir.join("leaf.pem"), leaf_pem).expect("write leaf.pem");
        std::fs::write(dir.join("leaf.key"), leaf_key).expect("write leaf.key");
        std::fs::create_dir_all(dir.join("www")).expect("www dir");
        std::fs::write(dir.join("www/index.html"), "ok\n").expect("write index.html");
        // The children (www-data) read the pages.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("a+rX")
            .arg(&dir)
            .status();
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("httpd.conf");
            std::fs::write(&conf, config(&dir, port)).expect("write httpd.conf");
            let _ = std::fs::remove_file(dir.join("error.log"));
            let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
            let mut child = Command::new(BINARY)
                .arg("-f")
                .arg(&conf)
                .arg("-DFOREGROUND")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn apache2");
            let outcome = wait_listening(&mut child, port, Duration::from_secs(10), "apache2");
            match outcome {
                Ok(()) => {
                    return Apache {
                        child,
                        dir,
                        port,
                        ca_der,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = format!(
                        "{}{}",
                        read_lossy(&dir.join("error.log")),
                        read_lossy(&dir.join("stderr.log"))
                    );
                    last = format!("{why}; error log:\n{log}");
                    if log.contains("Address already in use") {
                        continue;
                    }
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("apache2 did not start: {last}");
    }

    /// `https://localhost:PORT{path}`.
    pub fn url(&self, path: &str) -> http::Uri {
        format!("https://localhost:{}{path}", self.port)
            .parse()
            .expect("valid URI")
    }

    /// Roots containing just the CA that signed httpd's certificate.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        roots
    }

    /// The CA certificate as PEM (for other clients: Go's).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A graceful restart, as `apachectl graceful` does it: `SIGUSR1` to the parent.
    pub fn graceful(&self) {
        let status = Command::new("kill")
            .arg("-USR1")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -USR1");
        assert!(status.success(), "kill -USR1 httpd");
    }

    /// The access log's lines (`METHOD PATH STATUS PROTOCOL`), once at least `completed`
    /// are there and the log stopped growing for 200 ms (at most 10 s in all).
    pub fn access_log(&self, completed: usize) -> Vec<String> {
        let path = self.dir.join("access.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = read_lossy(&path);
        let mut steady = Instant::now();
        while Instant::now() < deadline {
            if text.lines().count() >= completed && steady.elapsed() >= Duration::from_millis(200) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            let now = read_lossy(&path);
            if now.len() != text.len() {
                steady = Instant::now();
                text = now;
            }
        }
        text.lines().map(str::to_owned).collect()
    }

    /// httpd's error log so far.
    pub fn error_log(&self) -> String {
        read_lossy(&self.dir.join("error.log"))
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SIGTERM lets the parent stop its children; then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
