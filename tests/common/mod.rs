//! A broker binary on a free port, and raw framing for the wire-level tests
//! (exact versions, malformed and partial frames, ordering on one socket), as
//! `tests/clients/kraw.py` does in Python; other tests speak Kafka through
//! kafscale-client (`common::kafka`).
#![allow(dead_code)]

pub mod kafka;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafscale_codec::kafka_protocol::messages::ApiKey;
use kafscale_codec::kafka_protocol::protocol::Encodable;

pub struct Broker {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's --data-dir.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The admin token the broker wrote at start-up (`kafscale` CLIs read
    /// it through `KAFSCALE_HTTP_TOKEN_FILE`).
    pub fn token_file(&self) -> std::path::PathBuf {
        self.data_dir().join("admin.token")
    }

    /// That admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap()
            .trim()
            .to_owned()
    }

    /// What the broker wrote to stderr so far (its log), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// Sends a signal (`STOP`, `CONT`, ...) to a process.
pub fn signal(pid: u32, name: &str) {
    let st = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{name} {pid}");
}

/// A loopback port nothing listens on, and that no other test of any test
/// process gets while this one runs.
///
/// Ports come from 20000-32767, below Linux's ephemeral range (32768 and
/// up), so neither the kernel's `bind(0)` (which `scripts/servers.sh` and
/// `scripts/kafka.sh` use) nor the source port of an outgoing connection
/// can take one between this call and the broker's bind. Each port is held
/// by an advisory lock on a file under the temp directory for the life of
/// the test process (the kernel drops it when the process ends, however it
/// ends), so parallel tests and test binaries never share one. A port
/// taken from `bind(0)` and released, as before, was handed out again:
/// CI once ran `kafscale users` against another test's TLS listener
/// ("invalid HTTP version parsed").
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("kafscale-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = RandomState::new();
    for attempt in 0u64..10_000 {
        let port = 20_000 + (seed.hash_one(attempt) % 12_768) as u16;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))
            .unwrap();
        if lock.try_lock().is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap().push(lock);
            return port;
        }
    }
    panic!("no free loopback port in 20000-32767");
}

pub fn start() -> Broker {
    start_with(&[])
}

/// A broker with extra flags (kept across [`Broker::restart`]).
pub fn start_with(extra: &[&str]) -> Broker {
    start_with_env(extra, &[])
}

/// A broker with extra flags and environment variables.
pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Broker {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_listening(move |_| extra, env)
}

/// A broker whose extra flags depend on its PLAINTEXT port (`--listeners`
/// must name it: the broker is up once that port answers).
pub fn start_listening(extra: impl FnOnce(u16) -> Vec<String>, env: &[(&str, &str)]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let extra = extra(port);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let child = spawn_broker(dir.path(), port, metrics_port, &extra, &env);
    Broker {
        child,
        port,
        metrics_port,
        extra,
        env,
        _dir: dir,
    }
}

impl Broker {
    /// Kills the broker (SIGKILL) and starts it again on the same ports
    /// and data directory.
    pub fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.respawn();
    }

    /// Stops the broker as an operator does (SIGTERM: it drains), waits
    /// for it to exit and starts it again on the same ports and data.
    pub fn stop_and_restart(&mut self) {
        signal(self.pid(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the broker stopped with {status}");
        self.respawn();
    }

    fn respawn(&mut self) {
        self.child = spawn_broker(
            self._dir.path(),
            self.port,
            self.metrics_port,
            &self.extra,
            &self.env,
        );
    }
}

fn spawn_broker(
    dir: &std::path::Path,
    port: u16,
    metrics_port: u16,
    extra: &[String],
    env: &[(String, String)],
) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args([
            "broker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--flush-interval-ms",
            "20",
            "--max-frame-bytes",
            "1MiB",
            "--shards",
            "2",
        ])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("broker.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both listeners: the HTTP one (metrics, the REST API) opens a moment
    // after the Kafka port.
    for p in [port, metrics_port] {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
                panic!("the broker exited with {status} before listening on {p}:\n{log}");
            }
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

pub fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", b.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends one request (header v1, or v2 for flexible versions) and returns the
/// response body after its header, or None if the broker closed the connection.
pub fn call<T: Encodable>(s: &mut TcpStream, api: ApiKey, version: i16, req: &T) -> Option<Bytes> {
    let mut body = BytesMut::new();
    body.put_i16(api as i16);
    body.put_i16(version);
    body.put_i32(7);
    body.put_i16(4);
    body.put_slice(b"test");
    let flexible = api.request_header_version(version) >= 2;
    if flexible {
        body.put_u8(0);
    }
    req.encode(&mut body, version).unwrap();
    send_raw(s, &body)?;
    let resp = read_frame(s)?;
    let skip = if api.response_header_version(version) >= 1 {
        5
    } else {
        4
    };
    assert_eq!(&resp[..4], &7i32.to_be_bytes(), "correlation id");
    Some(resp.slice(skip..))
}

pub fn send_raw(s: &mut TcpStream, body: &[u8]) -> Option<()> {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    s.write_all(&frame).ok()
}

pub fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(Bytes::from(buf))
}

pub fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A plain HTTP/1.1 request to the broker's HTTP port: the whole response
/// (status line, headers, body) as text.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> String {
    http_as(port, method, path, body, None)
}

/// [`http`] with `Authorization: Bearer {token}`.
pub fn http_as(port: u16, method: &str, path: &str, body: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of an unlabelled counter or gauge on the broker's /metrics.
pub fn metric(metrics_port: u16, name: &str) -> Option<u64> {
    http_get(metrics_port, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub fn http_get(port: u16, path: &str) -> String {
    http(port, "GET", path, "")
}

pub fn http_post(port: u16, path: &str, body: &str) -> String {
    http(port, "POST", path, body)
}
