//! The broker's SASL and TLS listeners against real clients (kcat,
//! confluent-kafka, kafka-python, the Java client, kafscale-client) and raw
//! frames for the exact protocol edges: Kafka's order (nothing before
//! authentication), wrong passwords, unknown mechanisms, wrong SCRAM
//! proofs, v0 handshakes, session lifetimes and re-authentication; users
//! managed with `kafscale users`; no password in any log line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use kafscale_client::sasl::{Scram, ScramHash};
use kafscale_client::{Client, ClientConfig, Mechanism, Secret, TlsConfig};
use kafscale_codec::kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafscale_codec::kafka_protocol::protocol::{Decodable, StrBytes};

const ALICE: &str = "alice";
const ALICE_PASSWORD: &str = "wonder-land-7f3a";
const BOB_PASSWORD: &str = "builder-9c1e";

/// A broker with every kind of listener, its CA, and its ports.
struct Secure {
    broker: common::Broker,
    sasl_plaintext: u16,
    sasl_ssl: u16,
    ssl: u16,
    certs: tempfile::TempDir,
}

impl Secure {
    fn start(extra: &[&str]) -> Self {
        let certs = tempfile::tempdir().unwrap();
        let st = Command::new("bash")
            .args([
                "-c",
                "source scripts/kafka.sh && kafka_certs \"$1\"",
                "certs",
                certs.path().to_str().unwrap(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "openssl could not make test certificates");
        let (sasl_plaintext, sasl_ssl, ssl) = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        let dir = certs.path().to_owned();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let broker = common::start_listening(
            move |port| {
                let mut args = vec![
                    "--listeners".to_owned(),
                    format!(
                        "PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_plaintext},SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{ssl}"
                    ),
                    "--tls-cert".to_owned(),
                    dir.join("server.pem").to_str().unwrap().to_owned(),
                    "--tls-key".to_owned(),
                    dir.join("server.key").to_str().unwrap().to_owned(),
                    "--tls-client-ca".to_owned(),
                    dir.join("ca.pem").to_str().unwrap().to_owned(),
                ];
                args.append(&mut extra);
                args
            },
            &[],
        );
        let s = Self {
            broker,
            sasl_plaintext,
            sasl_ssl,
            ssl,
            certs,
        };
        s.users(&["add", ALICE, "--password-stdin"], Some(ALICE_PASSWORD));
        s
    }

    fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// Runs `kafscale users ...` against this broker; its stdout.
    fn users(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kafscale"))
            .arg("users")
            .args(args)
            .args([
                "--http",
                &format!("http://127.0.0.1:{}", self.broker.metrics_port),
            ])
            .env("KAFSCALE_HTTP_TOKEN_FILE", self.broker.token_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            writeln!(input, "{s}").unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kafscale users {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn client_config(&self, mechanism: Mechanism, tls: bool, password: &str) -> ClientConfig {
        let port = if tls {
            self.sasl_ssl
        } else {
            self.sasl_plaintext
        };
        let mut c = ClientConfig::new(format!("127.0.0.1:{port}")).with_sasl(
            mechanism,
            ALICE,
            Secret::new(password.to_owned()),
        );
        if tls {
            c = c.with_tls(TlsConfig {
                ca_file: Some(self.ca()),
                ..TlsConfig::default()
            });
        }
        c
    }

    /// Asserts the broker never logged a password of these tests.
    fn assert_no_password_logged(&self) {
        let log = self.broker.log();
        assert!(!log.is_empty(), "the broker logged nothing at all");
        for p in [ALICE_PASSWORD, BOB_PASSWORD, "not-the-password"] {
            assert!(
                !log.contains(p),
                "the broker's log holds a password:\n{log}"
            );
        }
    }
}

/// Runs tests/clients/sasl_client.py; its JSON answer.
fn python_client(client: &str, action: &str, config: serde_json::Value) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/sasl_client.py"))
        .args([client, action, &config.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{client} {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{client} {action} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn values(answer: &serde_json::Value) -> Vec<String> {
    assert_eq!(answer["ok"], true, "{answer}");
    answer["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn kcat(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat (scripts/setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn kcat_sasl(s: &Secure, tls: bool, mechanism: &str, password: &str) -> Vec<String> {
    kcat_sasl_as(s, tls, mechanism, ALICE, password)
}

fn kcat_sasl_as(s: &Secure, tls: bool, mechanism: &str, user: &str, password: &str) -> Vec<String> {
    let port = if tls { s.sasl_ssl } else { s.sasl_plaintext };
    let mut v = vec![
        "-b".to_owned(),
        format!("127.0.0.1:{port}"),
        "-X".to_owned(),
        format!(
            "security.protocol={}",
            if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" }
        ),
        "-X".to_owned(),
        format!("sasl.mechanisms={mechanism}"),
        "-X".to_owned(),
        format!("sasl.username={user}"),
        "-X".to_owned(),
        format!("sasl.password={password}"),
    ];
    if tls {
        v.push("-X".into());
        v.push(format!("ssl.ca.location={}", s.ca().display()));
    }
    v
}

fn stdout_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn scram_and_plain_over_sasl_ssl_and_sasl_plaintext_with_every_client() {
    let s = Secure::start(&["--sasl-mechanisms", "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN"]);
    let topic = "secured";
    let mut expected = Vec::new();

    // kcat (librdkafka): each mechanism on each SASL listener.
    for (tls, mechanism) in [
        (true, "SCRAM-SHA-512"),
        (false, "SCRAM-SHA-256"),
        (true, "PLAIN"),
    ] {
        let line = format!("kcat-{mechanism}-{tls}");
        let mut args = kcat_sasl(&s, tls, mechanism, ALICE_PASSWORD);
        args.extend(["-P", "-t", topic].map(String::from));
        let out = kcat(&strs(&args), &format!("{line}\n"));
        assert!(
            out.status.success(),
            "kcat {mechanism} tls={tls}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        expected.push(line);
    }

    // confluent-kafka (idempotent) over SASL_SSL, kafka-python over SASL_PLAINTEXT.
    let config = |port: u16, protocol: &str, mechanism: &str, t: &str| {
        serde_json::json!({
            "bootstrap": format!("127.0.0.1:{port}"), "protocol": protocol,
            "mechanism": mechanism, "user": ALICE, "password": ALICE_PASSWORD,
            "ca": s.ca(), "topic": t, "count": 5, "seconds": 0,
        })
    };
    let produced = values(&python_client(
        "confluent",
        "produce",
        config(s.sasl_ssl, "SASL_SSL", "SCRAM-SHA-256", topic),
    ));
    expected.extend(produced);
    let kp_topic = "secured-kp";
    let kp = values(&python_client(
        "kafka-python",
        "produce",
        config(
            s.sasl_plaintext,
            "SASL_PLAINTEXT",
            "SCRAM-SHA-512",
            kp_topic,
        ),
    ));

    // Read back by other clients, over the other listeners.
    let mut args = kcat_sasl(&s, false, "SCRAM-SHA-512", ALICE_PASSWORD);
    args.extend(["-C", "-t", topic, "-e", "-q"].map(String::from));
    let out = kcat(&strs(&args), "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_lines(&out), expected);
    let mut c = config(s.sasl_ssl, "SASL_SSL", "PLAIN", kp_topic);
    c["count"] = 5.into();
    assert_eq!(values(&python_client("kafka-python", "consume", c)), kp);
    // kafka-python over SASL_SSL with SCRAM, both hashes.
    let kp_ssl = values(&python_client(
        "kafka-python",
        "produce",
        config(s.sasl_ssl, "SASL_SSL", "SCRAM-SHA-256", "secured-kp-ssl"),
    ));
    let mut c = config(s.sasl_ssl, "SASL_SSL", "SCRAM-SHA-512", "secured-kp-ssl");
    c["count"] = 5.into();
    assert_eq!(values(&python_client("kafka-python", "consume", c)), kp_ssl);
    let mut c = config(s.sasl_ssl, "SASL_SSL", "SCRAM-SHA-512", kp_topic);
    c["count"] = 5.into();
    assert_eq!(values(&python_client("confluent", "consume", c)), kp);

    // Metadata over a listener names that listener's endpoints.
    let mut args = kcat_sasl(&s, true, "SCRAM-SHA-256", ALICE_PASSWORD);
    args.extend(["-L", "-t", topic].map(String::from));
    let out = kcat(&strs(&args), "");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&format!("broker 0 at 127.0.0.1:{}", s.sasl_ssl)),
        "{listing}"
    );

    // The Java client, where the Kafka jars are (scripts/setup fetches them).
    if let Some(libs) = kafka_libs() {
        java_round_trip(&s, &libs);
    }
    s.assert_no_password_logged();
}

/// The Apache Kafka jars' directory, as scripts/kafka.sh names it.
fn kafka_libs() -> Option<PathBuf> {
    let out = Command::new("bash")
        .args([
            "-c",
            "source scripts/kafka.sh && echo \"$KAFSCALE_KAFKA_HOME/libs\"",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    if dir.join("../.complete").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
        "the Kafka jars are not in {} but KAFSCALE_TEST_REQUIRE_SERVERS is set",
        dir.display()
    );
    eprintln!("skipped the Java client: no Kafka jars (scripts/setup fetches them)");
    None
}

fn java_round_trip(s: &Secure, libs: &Path) {
    let props = s.certs.path().join("client.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ALICE}\" password=\"{ALICE_PASSWORD}\";\nssl.truststore.type=PEM\nssl.truststore.location={}\n",
            s.ca().display()
        ),
    )
    .unwrap();
    let cp = format!("{}/*", libs.display());
    let bootstrap = format!("127.0.0.1:{}", s.sasl_ssl);
    let java = |class: &str, extra: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new("java")
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", &cp, class])
            .args(["--bootstrap-server", &bootstrap, "--topic", "secured-java"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let props = props.to_str().unwrap();
    let out = java(
        "org.apache.kafka.tools.ConsoleProducer",
        &["--producer.config", props],
        "java-1\njava-2\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = java(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        &[
            "--consumer.config",
            props,
            "--from-beginning",
            "--max-messages",
            "2",
            "--timeout-ms",
            "30000",
        ],
        "",
    );
    assert_eq!(
        stdout_lines(&out),
        ["java-1", "java-2"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `kafka-configs` (Kafka's ConfigCommand) against `port`, signed in
/// as alice with SCRAM-SHA-512 when `sasl`; its output.
fn kafka_configs(s: &Secure, libs: &Path, sasl: bool, args: &[&str]) -> std::process::Output {
    let props = s.certs.path().join("admin.properties");
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{ALICE}\" password=\"{ALICE_PASSWORD}\";\n"
        ),
    )
    .unwrap();
    let port = if sasl {
        s.sasl_plaintext
    } else {
        s.broker.port
    };
    let mut cmd = Command::new("java");
    cmd.args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg("kafka.admin.ConfigCommand")
        .args(["--bootstrap-server", &format!("127.0.0.1:{port}")]);
    if sasl {
        cmd.arg("--command-config").arg(&props);
    }
    cmd.args(args).output().unwrap()
}

/// KIP-554 with Kafka's own tool: `kafka-configs --entity-type users`
/// adds, describes and deletes SCRAM credentials; the new user signs in;
/// Kafka's rules refuse too few iterations, deleting what does not exist
/// and anyone who did not authenticate.
#[test]
fn kafka_configs_manages_scram_users() {
    let Some(libs) = kafka_libs() else {
        return;
    };
    let s = Secure::start(&[]);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let carol = ["--entity-type", "users", "--entity-name", "carol"];
    let alter = |sasl: bool, change: &[&str]| {
        let mut args = vec!["--alter"];
        args.extend(change);
        args.extend(carol);
        kafka_configs(&s, &libs, sasl, &args)
    };
    let describe = || {
        let mut args = vec!["--describe"];
        args.extend(carol);
        let out = kafka_configs(&s, &libs, true, &args);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // As in Kafka, one request changes a user once: both mechanisms at
    // once are refused, one after the other work.
    let out = alter(
        true,
        &[
            "--add-config",
            "SCRAM-SHA-256=[iterations=4096,password=carol-pw-5d2b],SCRAM-SHA-512=[password=carol-pw-5d2b]",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("A user credential cannot be altered twice in the same request"),
        "{}",
        text(&out)
    );
    for config in [
        "SCRAM-SHA-256=[iterations=4096,password=carol-pw-5d2b]",
        "SCRAM-SHA-512=[password=carol-pw-5d2b]",
    ] {
        let out = alter(true, &["--add-config", config]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        describe().contains("SCRAM credential configs for user-principal 'carol' are SCRAM-SHA-256=iterations=4096, SCRAM-SHA-512=iterations=4096"),
        "{}",
        describe()
    );
    assert!(s.users(&["list"], None).contains("carol"));
    // carol signs in with either mechanism, with the password she was given.
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let mut args = kcat_sasl_as(&s, false, mechanism, "carol", "carol-pw-5d2b");
        args.extend(["-P", "-t", "carols"].map(String::from));
        let out = kcat(&strs(&args), "from carol\n");
        assert!(out.status.success(), "{mechanism}: {}", text(&out));
        let mut args = kcat_sasl_as(&s, false, mechanism, "carol", "not-the-password");
        args.extend(["-L"].map(String::from));
        let out = kcat(&strs(&args), "");
        assert!(!out.status.success(), "a wrong password signed in");
    }

    // Kafka's rules.
    // (Too few iterations the Java client refuses itself.)
    let out = alter(
        true,
        &[
            "--add-config",
            "SCRAM-SHA-256=[iterations=20000,password=x-y-z]",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("Too many iterations"), "{}", text(&out));
    let out = alter(false, &["--delete-config", "SCRAM-SHA-512"]);
    assert!(
        !out.status.success(),
        "an anonymous client deleted a credential"
    );
    assert!(
        text(&out).contains("ClusterAuthorizationException"),
        "{}",
        text(&out)
    );
    let mut args = vec!["--describe"];
    args.extend(carol);
    let out = kafka_configs(&s, &libs, false, &args);
    assert!(
        text(&out).contains("ClusterAuthorizationException"),
        "an anonymous client listed credentials: {}",
        text(&out)
    );

    let out = alter(true, &["--delete-config", "SCRAM-SHA-512"]);
    assert!(out.status.success(), "{}", text(&out));
    let now = describe();
    assert!(
        now.contains("SCRAM-SHA-256=iterations=4096") && !now.contains("SCRAM-SHA-512"),
        "{now}"
    );
    let out = alter(true, &["--delete-config", "SCRAM-SHA-512"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Attempt to delete a user credential that does not exist"),
        "{}",
        text(&out)
    );
    let log = s.broker.log();
    assert!(
        log.lines().any(|l| l.contains(
            r#""action":"AlterUserScramCredentials","target":"user carol: delete SCRAM-SHA-512","outcome":"refused: Attempt to delete a user credential that does not exist""#
        ) && l.contains("User:alice")),
        "a refused change is logged with who asked:\n{log}"
    );
    assert!(
        !log.contains("carol-pw-5d2b"),
        "carol's password is in the log"
    );
    s.assert_no_password_logged();
}

#[test]
fn wrong_passwords_unknown_users_and_removed_users_are_refused_with_kafkas_message() {
    let s = Secure::start(&[]);
    s.users(&["add", "bob", "--password-stdin"], Some(BOB_PASSWORD));
    let listed = s.users(&["list"], None);
    assert!(
        listed.contains("alice") && listed.contains("bob"),
        "{listed}"
    );
    assert!(!listed.contains(ALICE_PASSWORD), "{listed}");

    let refused = |password: &str| {
        let mut args = kcat_sasl(&s, false, "SCRAM-SHA-256", password);
        args.extend(["-L", "-m", "5"].map(String::from));
        let out = kcat(&strs(&args), "");
        assert!(!out.status.success(), "kcat got in with {password:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused("not-the-password");
    assert!(
        e.contains(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
        ),
        "{e}"
    );

    // PLAIN is not enabled by default: error 33 lists what is.
    let mut args = kcat_sasl(&s, false, "PLAIN", ALICE_PASSWORD);
    args.extend(["-L", "-m", "5"].map(String::from));
    let out = kcat(&strs(&args), "");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("SCRAM-SHA-512") && e.contains("SCRAM-SHA-256"),
        "{e}"
    );

    // Our client: the right password works on both mechanisms and TLS; a
    // wrong one fails with the broker's message.
    let ok = s.client_config(Mechanism::ScramSha512, true, ALICE_PASSWORD);
    let wrong = s.client_config(Mechanism::ScramSha256, false, "not-the-password");
    let (ok, wrong) = common::kafka::run(move || async move {
        let ok = match Client::connect(ok).await {
            Ok(c) => c.metadata(&[]).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let wrong = Client::connect(wrong).await.err().map(|e| e.to_string());
        (ok, wrong)
    });
    ok.unwrap();
    let wrong = wrong.expect("a wrong password must not connect");
    assert!(wrong.contains("Authentication failed"), "{wrong}");

    // bob removed: his password no longer works.
    let bob = |password: &str| {
        let mut args = kcat_sasl(&s, true, "SCRAM-SHA-512", password);
        args[7] = "sasl.username=bob".into();
        args.extend(["-L", "-m", "5"].map(String::from));
        kcat(&strs(&args), "")
    };
    assert!(bob(BOB_PASSWORD).status.success());
    s.users(&["remove", "bob"], None);
    assert!(!bob(BOB_PASSWORD).status.success());
    assert!(!s.users(&["list"], None).contains("bob"));

    let failures = common::metric(s.broker.metrics_port, "kafscale_sasl_failures_total")
        .expect("kafscale_sasl_failures_total");
    assert!(failures >= 4, "{failures} failures counted");
    // Each failed sign-in is in the audit trail, with no password.
    let log = s.broker.log();
    assert!(
        log.lines().any(|l| l.contains(
            r#""principal":"User:ANONYMOUS","host":"127.0.0.1","action":"SaslAuthenticate","target":"SCRAM-SHA-"#
        ) && l.contains(r#""outcome":"failed: "#)),
        "{log}"
    );
    s.assert_no_password_logged();
}

/// A connection to a SASL listener, speaking raw frames.
fn raw(port: u16) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn handshake(s: &mut std::net::TcpStream, version: i16, mechanism: &str) -> SaslHandshakeResponse {
    let req =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()));
    let mut body = common::call(s, ApiKey::SaslHandshake, version, &req).expect("handshake answer");
    SaslHandshakeResponse::decode(&mut body, version).unwrap()
}

fn authenticate(s: &mut std::net::TcpStream, token: Vec<u8>) -> Option<SaslAuthenticateResponse> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
    let mut body = common::call(s, ApiKey::SaslAuthenticate, 2, &req)?;
    Some(SaslAuthenticateResponse::decode(&mut body, 2).unwrap())
}

/// A SCRAM-SHA-256 exchange for alice with `password`; the final answer.
fn scram_exchange(s: &mut std::net::TcpStream, password: &str) -> Option<SaslAuthenticateResponse> {
    assert_eq!(handshake(s, 1, "SCRAM-SHA-256").error_code, 0);
    let scram = Scram::new(ScramHash::Sha256, ALICE, Scram::random_nonce());
    let first = authenticate(s, scram.client_first())?;
    assert_eq!(first.error_code, 0);
    let sf = scram.parse_server_first(&first.auth_bytes).unwrap();
    let salted = ScramHash::Sha256.salted_password(password.as_bytes(), &sf.salt, sf.iterations);
    let fin = scram.client_final(&sf, &salted);
    let answer = authenticate(s, fin.message.clone())?;
    if answer.error_code == 0 {
        fin.verify_server_final(&answer.auth_bytes)
            .expect("the broker proves it knows alice's key");
    }
    Some(answer)
}

fn metadata_answers(s: &mut std::net::TcpStream) -> bool {
    common::call(s, ApiKey::Metadata, 9, &MetadataRequest::default()).is_some()
}

#[test]
fn kafkas_order_is_kept_before_and_during_authentication() {
    let s = Secure::start(&["--sasl-mechanisms", "SCRAM-SHA-256,PLAIN"]);
    let port = s.sasl_plaintext;

    // ApiVersions before anything lists the SASL APIs; Metadata closes.
    let mut c = raw(port);
    let mut body = common::call(
        &mut c,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    )
    .unwrap();
    let versions = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    let sasl: Vec<_> = versions
        .api_keys
        .iter()
        .filter(|k| {
            k.api_key == ApiKey::SaslHandshake as i16
                || k.api_key == ApiKey::SaslAuthenticate as i16
        })
        .map(|k| (k.api_key, k.max_version))
        .collect();
    assert_eq!(sasl, [(17, 1), (36, 2)]);
    assert!(
        !metadata_answers(&mut c),
        "Metadata before authentication was served"
    );

    // An unknown mechanism: error 33 with the enabled list, then closed.
    let mut c = raw(port);
    let r = handshake(&mut c, 1, "GSSAPI");
    assert_eq!(r.error_code, 33);
    let listed: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(listed, ["SCRAM-SHA-256", "PLAIN"]);
    assert!(common::closed(&mut c));

    // SaslAuthenticate before a handshake: ILLEGAL_SASL_STATE, closed.
    let mut c = raw(port);
    let r = authenticate(&mut c, b"n,,n=alice,r=abc".to_vec()).unwrap();
    assert_eq!(r.error_code, 34);
    assert!(common::closed(&mut c));

    // A large frame before authentication is refused at once (no reservation).
    let mut c = raw(port);
    common::send_raw(&mut c, &vec![0u8; 600 * 1024]);
    assert!(common::closed(&mut c));

    // A wrong proof: SASL_AUTHENTICATION_FAILED (58), the generic message, closed.
    let mut c = raw(port);
    let r = scram_exchange(&mut c, "not-the-password").unwrap();
    assert_eq!(r.error_code, 58);
    assert_eq!(
        r.error_message.as_deref(),
        Some(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
        )
    );
    assert!(common::closed(&mut c));

    // The right one: served from then on, no session end by default.
    let mut c = raw(port);
    let r = scram_exchange(&mut c, ALICE_PASSWORD).unwrap();
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 0));
    assert!(metadata_answers(&mut c));

    // A v0 handshake: the token follows bare, and so does the answer.
    let mut c = raw(port);
    assert_eq!(handshake(&mut c, 0, "PLAIN").error_code, 0);
    common::send_raw(&mut c, format!("\0{ALICE}\0{ALICE_PASSWORD}").as_bytes());
    let answer = common::read_frame(&mut c).expect("a bare token answer");
    assert!(answer.is_empty(), "PLAIN answers with an empty token");
    assert!(metadata_answers(&mut c));
    let mut c = raw(port);
    assert_eq!(handshake(&mut c, 0, "PLAIN").error_code, 0);
    common::send_raw(&mut c, format!("\0{ALICE}\0not-the-password").as_bytes());
    assert!(common::closed(&mut c), "a v0 failure closes the connection");

    // The PLAINTEXT listener is unchanged; SASL requests there are refused.
    let mut c = common::connect(&s.broker);
    assert!(metadata_answers(&mut c));
    assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 34);
    s.assert_no_password_logged();
}

#[test]
fn sessions_end_unless_the_client_reauthenticates() {
    let s = Secure::start(&["--sasl-session-lifetime-ms", "2000"]);
    let port = s.sasl_plaintext;

    // A raw client told the lifetime, which does not re-authenticate: its
    // next request after the end closes the connection.
    let mut c = raw(port);
    let r = scram_exchange(&mut c, ALICE_PASSWORD).unwrap();
    assert_eq!((r.error_code, r.session_lifetime_ms), (0, 2000));
    assert!(metadata_answers(&mut c));
    std::thread::sleep(Duration::from_millis(2300));
    assert!(!metadata_answers(&mut c), "served after the session ended");

    // One that re-authenticates (same user, same mechanism) goes on.
    let mut c = raw(port);
    assert_eq!(
        scram_exchange(&mut c, ALICE_PASSWORD).unwrap().error_code,
        0
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        scram_exchange(&mut c, ALICE_PASSWORD).unwrap().error_code,
        0
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(metadata_answers(&mut c), "a re-authenticated session ended");
    // Re-authentication with another mechanism is refused.
    let r = handshake(&mut c, 1, "SCRAM-SHA-512");
    assert_eq!(r.error_code, 34);

    // librdkafka re-authenticates on its own (KIP-368): a producer spread
    // over three session lifetimes delivers everything.
    let config = serde_json::json!({
        "bootstrap": format!("127.0.0.1:{}", s.sasl_ssl), "protocol": "SASL_SSL",
        "mechanism": "SCRAM-SHA-512", "user": ALICE, "password": ALICE_PASSWORD,
        "ca": s.ca(), "topic": "reauth", "count": 30, "seconds": 6,
    });
    let counters = || {
        let counter = |name| common::metric(s.broker.metrics_port, name).expect(name);
        (
            counter("kafscale_sasl_authentications_total"),
            counter("kafscale_sasl_failures_total"),
        )
    };
    let (ok_before, failed_before) = counters();
    let sent = values(&python_client(
        "confluent",
        "produce-slowly",
        config.clone(),
    ));
    assert_eq!(sent.len(), 30);
    let (ok_after, failed_after) = counters();
    let by_producer = ok_after - ok_before;
    eprintln!("the producer authenticated {by_producer} times");
    // Its two connections (bootstrap, then the broker's) authenticate once
    // each; over three lifetimes the broker's one re-authenticates twice,
    // and no connection was closed for an ended session.
    assert!(
        by_producer >= 4,
        "{by_producer} authentications: the producer did not re-authenticate"
    );
    assert_eq!(
        failed_after, failed_before,
        "a session ended under the producer"
    );
    let got = values(&python_client("confluent", "consume", config));
    assert_eq!(got, sent);
    s.assert_no_password_logged();
}

#[test]
fn mutual_tls_needs_a_certificate_from_the_client_ca() {
    let s = Secure::start(&[]);
    let base = |cert: bool| {
        let mut tls = TlsConfig {
            ca_file: Some(s.ca()),
            ..TlsConfig::default()
        };
        if cert {
            tls.cert_file = Some(s.certs.path().join("client.pem"));
            tls.key_file = Some(s.certs.path().join("client.key"));
        }
        ClientConfig::new(format!("127.0.0.1:{}", s.ssl)).with_tls(tls)
    };
    let (with, without) = (base(true), base(false));
    let (with, without) = common::kafka::run(move || async move {
        let with = match Client::connect(with).await {
            Ok(c) => c
                .metadata(&[])
                .await
                .map(|m| m.brokers.len())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let without = match Client::connect(without).await {
            Ok(c) => c.metadata(&[]).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        (with, without)
    });
    assert_eq!(with.unwrap(), 1);
    assert!(without.is_err(), "a client without a certificate got in");
    let tls_failures = common::metric(s.broker.metrics_port, "kafscale_tls_failures_total");
    assert!(
        tls_failures >= Some(1),
        "{tls_failures:?} TLS failures counted"
    );
    // kcat with its certificate produces over SSL; the records read back
    // over PLAINTEXT are the ones it sent, and without one it is refused.
    let ssl = |cert: bool| {
        let mut v = vec![
            "-b".to_owned(),
            format!("127.0.0.1:{}", s.ssl),
            "-X".to_owned(),
            "security.protocol=SSL".to_owned(),
            "-X".to_owned(),
            format!("ssl.ca.location={}", s.ca().display()),
        ];
        if cert {
            for (k, f) in [("certificate", "client.pem"), ("key", "client.key")] {
                v.push("-X".to_owned());
                v.push(format!(
                    "ssl.{k}.location={}",
                    s.certs.path().join(f).display()
                ));
            }
        }
        v
    };
    let mut args = ssl(true);
    args.extend(["-P", "-t", "mtls"].map(String::from));
    let out = kcat(&strs(&args), "over-mtls-1\nover-mtls-2\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = ssl(false);
    args.extend(["-L", "-m", "5"].map(String::from));
    assert!(
        !kcat(&strs(&args), "").status.success(),
        "kcat without a certificate got in"
    );
    let out = kcat(
        &[
            "-b",
            &format!("127.0.0.1:{}", s.broker.port),
            "-C",
            "-t",
            "mtls",
            "-e",
            "-q",
        ],
        "",
    );
    assert_eq!(stdout_lines(&out), ["over-mtls-1", "over-mtls-2"]);
    // kafka-python with its certificate produces and consumes over SSL.
    let mtls = serde_json::json!({
        "bootstrap": format!("127.0.0.1:{}", s.ssl), "protocol": "SSL",
        "ca": s.ca(), "cert": s.certs.path().join("client.pem"),
        "key": s.certs.path().join("client.key"), "topic": "mtls-kp", "count": 3,
    });
    let sent = values(&python_client("kafka-python", "produce", mtls.clone()));
    assert_eq!(
        values(&python_client("kafka-python", "consume", mtls)),
        sent
    );
}

/// Kafka names an mTLS client by its certificate's subject as Java's
/// `X500Principal.getName()` writes it (RFC 2253). Certificates with
/// escapes, multi-valued RDNs, attributes without a keyword (hex),
/// non-ASCII and leading/trailing spaces read the same from our broker's
/// code as from Java 17.
#[test]
fn certificate_subjects_are_named_as_java_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let subjects = [
        "/C=DE/O=Example/OU=payments/CN=alice",
        r"/O=x/CN=a\,b\+c",
        "/O=#hash/CN= lead and trail ",
        r#"/O=x/CN=quote"<>;=back\\slash"#,
        "/O=Example/CN=alice+UID=a1",
        "/CN=x/emailAddress=a@b.c",
        "/DC=com/DC=example/CN=svc",
        "/CN=x/serialNumber=123",
        "/O=Straße/CN=Zoë Ünicode",
        "/CN=x/title=Boss",
        "/ST=BE/L=Berlin/street=Main St 1/CN=x",
        "/CN=#x/O=a#b",
        "/CN=  two  /O= a b ",
        "/CN=   /O=x",
    ];
    let mut pems = Vec::new();
    let mut ours = Vec::new();
    for (i, subject) in subjects.iter().enumerate() {
        let (pem, der) = (
            dir.path().join(format!("{i}.pem")),
            dir.path().join(format!("{i}.der")),
        );
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-keyout",
                "/dev/null",
                "-days",
                "1",
                "-utf8",
                "-multivalue-rdn",
            ])
            .arg("-subj")
            .arg(subject)
            .arg("-out")
            .arg(&pem)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "openssl could not make a certificate for {subject}"
        );
        let st = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .status()
            .unwrap();
        assert!(st.success());
        let name = kafscale::auth::x500::subject_rfc2253(&std::fs::read(&der).unwrap())
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        ours.push(name);
        pems.push(pem);
    }
    let out = Command::new("java")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/X500Names.java"))
        .args(&pems)
        .output()
        .expect("java");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let java = stdout_lines(&out);
    assert_eq!(java.len(), subjects.len());
    for ((subject, ours), java) in subjects.iter().zip(&ours).zip(&java) {
        assert_eq!(ours, java, "the subject {subject}");
    }
    assert!(kafscale::auth::x500::subject_rfc2253(b"\x30\x03\x02\x01\x00").is_err());
}

/// Runs confluent-kafka's AdminClient over the SSL listener with the client
/// certificate: it lists the SCRAM users (only an authenticated principal
/// may) and asks to delete a credential nobody has (refused, and logged
/// with the principal). Its JSON answer, or the failure.
fn mtls_admin(s: &Secure) -> Result<serde_json::Value, String> {
    let script = r#"
import json, sys
from confluent_kafka.admin import AdminClient, UserScramCredentialDeletion, ScramMechanism
conf = json.loads(sys.argv[1])
admin = AdminClient(conf)
users = sorted(admin.describe_user_scram_credentials(request_timeout=15).result(timeout=20).keys())
futures = admin.alter_user_scram_credentials(
    [UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_256)], request_timeout=15)
try:
    futures["nobody"].result(timeout=20)
    refused = None
except Exception as e:
    refused = str(e)
print(json.dumps({"users": users, "refused": refused}))
"#;
    let d = s.certs.path();
    let conf = serde_json::json!({
        "bootstrap.servers": format!("127.0.0.1:{}", s.ssl),
        "security.protocol": "SSL",
        "ssl.ca.location": s.ca(),
        "ssl.certificate.location": d.join("client.pem"),
        "ssl.key.location": d.join("client.key"),
        "socket.timeout.ms": 10000,
    });
    let out = Command::new("timeout")
        .args(["60", "python3", "-c", script, &conf.to_string()])
        .output()
        .expect("python3");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The principal of an mTLS client is its certificate's subject mapped by
/// `--ssl-principal-mapping-rules`; it counts as authenticated (it may list
/// SCRAM users); a subject no rule maps is refused at connect.
#[test]
fn an_mtls_client_is_named_by_its_mapped_certificate_subject() {
    let s = Secure::start(&[
        "--ssl-principal-mapping-rules",
        "RULE:^CN=kafscale-(.*)$/svc-$1/U,DEFAULT",
    ]);
    let answer = mtls_admin(&s).unwrap();
    assert_eq!(answer["users"], serde_json::json!([ALICE]), "{answer}");
    let refused = answer["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("does not exist"),
        "deleting a missing credential: {answer}"
    );
    let log = s.broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains(r#""principal":"User:SVC-CLIENT""#)
                && l.contains(r#""outcome":"refused: "#)),
        "the refusal names the mapped principal:\n{log}"
    );
    drop(s);

    let strict = Secure::start(&["--ssl-principal-mapping-rules", "RULE:^CN=someone-else$/x/"]);
    assert!(mtls_admin(&strict).is_err(), "an unmapped subject got in");
    let log = strict.broker.log();
    assert!(
        log.contains(r#"no --ssl-principal-mapping-rules rule maps the client certificate's subject \"CN=kafscale-client\""#)
            || log.contains(r#"no --ssl-principal-mapping-rules rule maps the client certificate's subject "CN=kafscale-client""#),
        "{log}"
    );
}

/// The subject of the certificate a TLS listener serves to a new
/// connection (openssl s_client).
fn served_subject(port: u16) -> String {
    let out = Command::new("bash")
        .args([
            "-c",
            "timeout 10 openssl s_client -connect 127.0.0.1:$1 -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject -nameopt RFC2253",
            "served",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// SIGHUP makes the TLS listeners read their certificate and key again:
/// new connections get the new certificate, a connection opened before
/// keeps working on the same socket, and files that do not read leave the
/// certificate in use.
#[test]
fn certificates_reload_on_sighup_without_dropping_connections() {
    let s = Secure::start(&[]);
    let d = s.certs.path().to_owned();
    assert_eq!(served_subject(s.sasl_ssl), "subject=CN=localhost");

    let config = s.client_config(Mechanism::ScramSha512, true, ALICE_PASSWORD);
    let (pid, metrics, dir) = (s.broker.pid(), s.broker.metrics_port, d.clone());
    let (before, after) = common::kafka::run(move || async move {
        let client = Client::connect(config)
            .await
            .expect("connect over SASL_SSL");
        client.metadata(&[]).await.expect("metadata before");
        let opened = common::metric(metrics, "kafscale_connections_total");
        // A new server certificate from the same CA, in place of the old.
        let st = Command::new("bash")
            .args([
                "-c",
                r#"cd "$1" && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                     -keyout new.key -out new.csr -subj "/CN=localhost-reloaded" 2>/dev/null &&
                   openssl x509 -req -in new.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                     -out new.pem -days 2 -extfile server.ext 2>/dev/null &&
                   mv new.key server.key && mv new.pem server.pem"#,
                "renew",
                dir.to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(st.success(), "openssl could not renew the certificate");
        common::signal(pid, "HUP");
        std::thread::sleep(Duration::from_millis(500));
        let again = client.metadata(&[]).await.map(|m| m.brokers.len());
        let still = common::metric(metrics, "kafscale_connections_total");
        ((opened, again.map_err(|e| e.to_string())), still)
    });
    let ((opened, again), still) = (before, after);
    assert_eq!(again, Ok(1), "the connection opened before the reload");
    assert_eq!(opened, still, "the client did not need a new connection");
    assert_eq!(served_subject(s.sasl_ssl), "subject=CN=localhost-reloaded");
    assert_eq!(served_subject(s.ssl), "subject=CN=localhost-reloaded");

    // A key that does not read: the reloaded certificate stays in use.
    std::fs::write(d.join("server.key"), "not a key").unwrap();
    common::signal(s.broker.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(served_subject(s.sasl_ssl), "subject=CN=localhost-reloaded");
    let log = s.broker.log();
    assert!(
        log.contains(
            "SIGHUP: TLS certificates not reloaded, the ones in use stay: cannot read --tls-key"
        ),
        "{log}"
    );
    let mut args = kcat_sasl(&s, true, "SCRAM-SHA-512", ALICE_PASSWORD);
    args.extend(["-L"].map(String::from));
    assert!(
        kcat(&strs(&args), "").status.success(),
        "new clients still get in"
    );
}

/// Runs Kafka's own `kafka-acls` (org.apache.kafka.tools.AclCommand)
/// against the SASL_PLAINTEXT listener, signed in as `user`.
fn kafka_acls(
    s: &Secure,
    libs: &Path,
    user: &str,
    password: &str,
    args: &[&str],
) -> std::process::Output {
    let props = s.certs.path().join(format!("acls-{user}.properties"));
    std::fs::write(
        &props,
        format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";\n"
        ),
    )
    .unwrap();
    Command::new("java")
        .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.AclCommand")
        .args([
            "--bootstrap-server",
            &format!("127.0.0.1:{}", s.sasl_plaintext),
        ])
        .arg("--command-config")
        .arg(&props)
        .args(args)
        .output()
        .unwrap()
}

fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `--authorizer acl`: bindings made with Kafka's `kafka-acls` decide what
/// confluent-kafka, kafka-python, kcat and the Java tools may do. No ALLOW
/// means no; a DENY wins over an ALLOW; a super user may do anything; a
/// removed binding stops the client; ACLs need ALTER on the cluster; each
/// change is in the log with its principal.
#[test]
fn kafka_acls_decide_who_may_do_what() {
    let Some(libs) = kafka_libs() else {
        return;
    };
    let s = Secure::start(&[
        "--authorizer",
        "acl",
        "--super-users",
        &format!("User:{ALICE}"),
    ]);
    s.users(&["add", "bob", "--password-stdin"], Some(BOB_PASSWORD));
    let acls = |user: &str, password: &str, args: &[&str]| {
        let out = kafka_acls(&s, &libs, user, password, args);
        (out.status.success(), output_text(&out))
    };
    let as_alice = |args: &[&str]| {
        let (ok, text) = acls(ALICE, ALICE_PASSWORD, args);
        assert!(ok, "kafka-acls {args:?}: {text}");
        text
    };

    // The super user creates the topics (auto-created by producing).
    for topic in ["orders", "payments", "audit-log", "audit-x"] {
        let mut args = kcat_sasl(&s, false, "SCRAM-SHA-512", ALICE_PASSWORD);
        args.extend(["-P", "-t", topic].map(String::from));
        let out = kcat(&strs(&args), &format!("{topic}-by-alice\n"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Bob has nothing yet: kafka-acls refuses him (ALTER and DESCRIBE on the
    // cluster), and so does every topic.
    let (ok, text) = acls("bob", BOB_PASSWORD, &["--list"]);
    assert!(
        !ok && text.contains("ClusterAuthorizationException"),
        "{text}"
    );
    let (ok, text) = acls(
        "bob",
        BOB_PASSWORD,
        &[
            "--add",
            "--allow-principal",
            "User:bob",
            "--operation",
            "All",
            "--topic",
            "*",
        ],
    );
    assert!(
        !ok && text.contains("ClusterAuthorizationException"),
        "{text}"
    );
    let config = |user: &str, password: &str, topic: &str, group: &str| {
        serde_json::json!({
            "bootstrap": format!("127.0.0.1:{}", s.sasl_ssl), "protocol": "SASL_SSL",
            "mechanism": "SCRAM-SHA-512", "user": user, "password": password,
            "ca": s.ca(), "topic": topic, "count": 1, "group": group,
        })
    };
    let bob = |topic: &str, group: &str| config("bob", BOB_PASSWORD, topic, group);
    let answer = python_client("confluent", "produce", bob("orders", ""));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TOPIC_AUTHORIZATION_FAILED"),
        "{answer}"
    );

    // Grants, as an operator writes them.
    as_alice(&[
        "--add",
        "--allow-principal",
        "User:bob",
        "--producer",
        "--topic",
        "orders",
    ]);
    as_alice(&[
        "--add",
        "--allow-principal",
        "User:bob",
        "--operation",
        "Read",
        "--topic",
        "orders",
    ]);
    as_alice(&[
        "--add",
        "--allow-principal",
        "User:bob",
        "--operation",
        "Read",
        "--group",
        "app-",
        "--resource-pattern-type",
        "prefixed",
    ]);
    as_alice(&[
        "--add",
        "--allow-principal",
        "User:bob",
        "--operation",
        "All",
        "--topic",
        "audit-",
        "--resource-pattern-type",
        "prefixed",
    ]);
    as_alice(&[
        "--add",
        "--deny-principal",
        "User:bob",
        "--operation",
        "Write",
        "--topic",
        "audit-log",
    ]);
    let listed = as_alice(&["--list", "--principal", "User:bob"]);
    for want in [
        "name=orders, patternType=LITERAL",
        "name=app-, patternType=PREFIXED",
        "name=audit-log, patternType=LITERAL",
        "principal=User:bob, host=*, operation=WRITE, permissionType=DENY",
        "principal=User:bob, host=*, operation=READ, permissionType=ALLOW",
        "principal=User:bob, host=*, operation=CREATE, permissionType=ALLOW",
    ] {
        assert!(listed.contains(want), "{want:?} not in:\n{listed}");
    }

    // What the grants allow: produce and consume orders in an app- group.
    let answer = python_client("confluent", "produce", bob("orders", ""));
    assert_eq!(answer["ok"], true, "{answer}");
    let answer = python_client("confluent", "consume", bob("orders", "app-billing"));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(values(&answer), ["orders-by-alice"]);
    // What they do not: another group, another topic, the DENY.
    let answer = python_client("confluent", "consume", bob("orders", "other"));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("GROUP_AUTHORIZATION_FAILED"),
        "{answer}"
    );
    let answer = python_client("kafka-python", "produce", bob("payments", ""));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TopicAuthorizationFailed"),
        "{answer}"
    );
    let answer = python_client("kafka-python", "produce", bob("audit-log", ""));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TopicAuthorizationFailed"),
        "{answer}"
    );
    let answer = python_client("kafka-python", "produce", bob("audit-x", ""));
    assert_eq!(answer["ok"], true, "{answer}");
    // A topic bob would auto-create but may not: unauthorized, not unknown.
    let answer = python_client("kafka-python", "produce", bob("audit-new", ""));
    assert_eq!(answer["ok"], true, "{answer}");
    let answer = python_client("kafka-python", "produce", bob("elsewhere", ""));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TopicAuthorizationFailed"),
        "{answer}"
    );
    // Reading audit-log is still allowed: the DENY is for WRITE.
    let mut args = kcat_sasl_as(&s, true, "SCRAM-SHA-512", "bob", BOB_PASSWORD);
    args.extend(["-C", "-t", "audit-log", "-o", "beginning", "-e", "-q"].map(String::from));
    let out = kcat(&strs(&args), "");
    assert_eq!(
        stdout_lines(&out),
        ["audit-log-by-alice"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Metadata lists only what bob may describe.
    let mut args = kcat_sasl_as(&s, true, "SCRAM-SHA-512", "bob", BOB_PASSWORD);
    args.extend(["-L", "-J"].map(String::from));
    let out = kcat(&strs(&args), "");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut names: Vec<&str> = listing["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["audit-log", "audit-new", "audit-x", "orders"]);

    // KIP-430: the admin client is told what bob may do.
    let answer = python_client("confluent", "authorized", bob("audit-log", ""));
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(
        answer["topic"],
        serde_json::json!([
            "ALTER",
            "ALTER_CONFIGS",
            "CREATE",
            "DELETE",
            "DESCRIBE",
            "DESCRIBE_CONFIGS",
            "READ"
        ]),
        "ALL on audit- but WRITE denied on audit-log: {answer}"
    );
    assert_eq!(answer["cluster"], serde_json::json!([]), "{answer}");
    let answer = python_client(
        "confluent",
        "authorized",
        config(ALICE, ALICE_PASSWORD, "audit-log", ""),
    );
    assert_eq!(
        answer["cluster"],
        serde_json::json!([
            "ALTER",
            "ALTER_CONFIGS",
            "CLUSTER_ACTION",
            "CREATE",
            "DESCRIBE",
            "DESCRIBE_CONFIGS",
            "IDEMPOTENT_WRITE"
        ]),
        "the super user may do everything: {answer}"
    );

    // A removed binding holds at once on the broker that removed it.
    as_alice(&[
        "--remove",
        "--force",
        "--allow-principal",
        "User:bob",
        "--operation",
        "Read",
        "--topic",
        "orders",
    ]);
    let answer = python_client("confluent", "consume", bob("orders", "app-billing"));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TOPIC_AUTHORIZATION_FAILED"),
        "{answer}"
    );

    // A transactional id bob has no ACL for: Kafka's code 53.
    let answer = python_client("confluent", "init-transactions", bob("orders", "bob-txn"));
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED"),
        "{answer}"
    );

    // Refused changes are in the trail too: bob may not change ACLs or
    // delete a topic.
    let (ok, text) = acls(
        "bob",
        BOB_PASSWORD,
        &[
            "--add",
            "--allow-principal",
            "User:bob",
            "--operation",
            "All",
            "--topic",
            "orders",
        ],
    );
    assert!(!ok, "{text}");
    let bob_config = ClientConfig::new(format!("127.0.0.1:{}", s.sasl_plaintext)).with_sasl(
        Mechanism::ScramSha512,
        "bob",
        Secret::new(BOB_PASSWORD.to_owned()),
    );
    let deleted = kafscale_shard::block_on(move || async move {
        let c = Client::connect(bob_config).await.unwrap();
        c.delete_topics(&["orders"], Duration::from_secs(10))
            .await
            .remove(0)
            .map_err(|e| e.to_string())
    })
    .unwrap();
    assert!(
        deleted
            .as_ref()
            .is_err_and(|e| e.contains("TOPIC_AUTHORIZATION_FAILED")),
        "{deleted:?}"
    );

    // The log names who changed what, and no password; and each denial of
    // a request (produce, a group, the cluster's idempotent write) once.
    let log = s.broker.log();
    for denial in [
        r#""principal":"User:bob","host":"127.0.0.1","action":"Authorize","target":"TOPIC orders","outcome":"refused: DESCRIBE is not allowed""#,
        r#""principal":"User:bob","host":"127.0.0.1","action":"Authorize","target":"TOPIC audit-log","outcome":"refused: WRITE is not allowed""#,
        r#""principal":"User:bob","host":"127.0.0.1","action":"Authorize","target":"TRANSACTIONAL_ID bob-txn","outcome":"refused: DESCRIBE is not allowed""#,
    ] {
        assert!(log.contains(denial), "{denial} not in {log}");
    }
    assert!(
        log.contains(r#""principal":"User:bob","host":"127.0.0.1","action":"Authorize","target":"GROUP other","outcome":"refused: "#),
        "no group denial in {log}"
    );
    // Once per 10 s for the same denial, however often the client retried.
    let writes = log
        .matches(r#""action":"Authorize","target":"TOPIC orders","outcome":"refused: DESCRIBE"#)
        .count();
    assert!(writes <= 3, "{writes} lines for one denial");
    assert!(
        log.contains(r#""principal":"User:bob","host":"127.0.0.1","action":"CreateAcls","target":"1 bindings","outcome":"refused: Cluster authorization failed"#)
            && log.contains(r#""principal":"User:bob","host":"127.0.0.1","action":"DeleteTopics","target":"topic orders","outcome":"refused: User:bob may not delete topic"#),
        "{log}"
    );
    assert!(
        log.contains(r#""principal":"User:alice","host":"127.0.0.1","action":"CreateAcls","target":"(pattern=ResourcePattern(resourceType=GROUP, name=app-, patternType=PREFIXED), entry=(principal=User:bob, host=*, operation=READ, permissionType=ALLOW))","outcome":"ok""#)
            && log.contains(r#""action":"DeleteAcls","target":"(pattern=ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL), entry=(principal=User:bob, host=*, operation=READ, permissionType=ALLOW))","outcome":"ok""#),
        "{log}"
    );
    s.assert_no_password_logged();
}

/// Without `--authorizer acl` the ACL APIs answer SECURITY_DISABLED, as
/// Kafka's brokers without an authorizer do.
#[test]
fn acls_without_an_authorizer_are_refused_as_security_disabled() {
    let Some(libs) = kafka_libs() else {
        return;
    };
    let s = Secure::start(&[]);
    let out = kafka_acls(&s, &libs, ALICE, ALICE_PASSWORD, &["--list"]);
    let text = output_text(&out);
    assert!(
        !out.status.success() && text.contains("SecurityDisabledException"),
        "{text}"
    );
}

/// With etcd, a binding made through one broker holds on the others within
/// a few seconds (each reads the bindings every second).
#[test]
fn acls_made_through_one_broker_hold_on_every_broker() {
    let (Some(libs), Ok(etcd)) = (kafka_libs(), std::env::var("KAFSCALE_TEST_ETCD_ENDPOINTS"))
    else {
        assert!(
            std::env::var_os("KAFSCALE_TEST_REQUIRE_SERVERS").is_none(),
            "KAFSCALE_TEST_ETCD_ENDPOINTS is not set but KAFSCALE_TEST_REQUIRE_SERVERS is"
        );
        eprintln!("skipped: no etcd (scripts/test starts it)");
        return;
    };
    let ns = format!("acl-{}", std::process::id());
    let super_user = format!("User:{ALICE}");
    let broker = |id: &str| {
        Secure::start(&[
            "--authorizer",
            "acl",
            "--super-users",
            &super_user,
            "--etcd-endpoints",
            &etcd,
            "--s3-namespace",
            &ns,
            "--broker-id",
            id,
        ])
    };
    let (a, b) = (broker("0"), broker("1"));
    a.users(&["add", "bob", "--password-stdin"], Some(BOB_PASSWORD));
    let mut args = kcat_sasl(&a, false, "SCRAM-SHA-512", ALICE_PASSWORD);
    args.extend(["-P", "-t", "shared"].map(String::from));
    let out = kcat(&strs(&args), "by-alice\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What bob's Metadata lists through one broker (kcat asks the one it
    // is given).
    let listed_by = |s: &Secure| -> Vec<String> {
        let mut args = kcat_sasl_as(s, false, "SCRAM-SHA-512", "bob", BOB_PASSWORD);
        args.extend(["-L", "-J"].map(String::from));
        let out = kcat(&strs(&args), "");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(listed_by(&a).is_empty() && listed_by(&b).is_empty());
    let out = kafka_acls(
        &a,
        &libs,
        ALICE,
        ALICE_PASSWORD,
        &[
            "--add",
            "--allow-principal",
            "User:bob",
            "--operation",
            "Describe",
            "--topic",
            "shared",
        ],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    // Whichever broker the tool sent CreateAcls to, the other one learns of
    // it from etcd.
    for s in [&a, &b] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while listed_by(s) != ["shared"] {
            assert!(
                std::time::Instant::now() < deadline,
                "broker {} never held the new ACL",
                s.broker.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs `kafscale tokens|users ...` with `token` as its bearer token.
fn kafscale_as(b: &common::Broker, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kafscale"))
        .args(args)
        .args(["--http", &format!("http://127.0.0.1:{}", b.metrics_port)])
        .env("KAFSCALE_HTTP_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The status line's code of a raw HTTP answer.
fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or_default()
}

/// The REST API needs a bearer token whose role covers the request: none
/// gets 401 (with `WWW-Authenticate: Bearer`), too small a role 403;
/// `kafscale tokens` makes and removes tokens with the admin token the
/// broker wrote at start-up; /metrics and /healthz stay open unless
/// --http-auth-all; every change and refusal is in the audit trail, and no
/// secret is in the log.
#[test]
fn the_rest_api_needs_a_token_with_the_role_for_the_request() {
    let b = common::start();
    let port = b.metrics_port;
    let admin = b.token();
    let source = r#"{"name":"s1","bootstrap":["127.0.0.1:1"]}"#;

    let anonymous = common::http(port, "POST", "/v1/mirror/sources", source);
    assert_eq!(status_of(&anonymous), "401", "{anonymous}");
    assert!(
        anonymous.contains("WWW-Authenticate: Bearer")
            || anonymous.contains("www-authenticate: Bearer"),
        "{anonymous}"
    );
    assert!(
        anonymous.contains("needs a bearer token with the operator role"),
        "{anonymous}"
    );
    assert_eq!(
        status_of(&common::http(port, "GET", "/v1/users", "")),
        "401"
    );
    let forged = format!("{}.{}", admin.split('.').next().unwrap(), "0".repeat(64));
    let wrong = common::http_as(port, "GET", "/v1/users", "", Some(&forged));
    assert!(
        status_of(&wrong) == "401" && wrong.contains("invalid bearer token"),
        "{wrong}"
    );
    for open in ["/metrics", "/healthz", "/v1/openapi.json"] {
        assert_eq!(
            status_of(&common::http(port, "GET", open, "")),
            "200",
            "{open}"
        );
    }

    // The admin token makes the others; each is printed once.
    let made = |name: &str, role: &str| {
        let out = kafscale_as(&b, &admin, &["tokens", "add", name, "--role", role]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (operator, viewer) = (made("ci", "operator"), made("dashboards", "viewer"));
    assert!(operator.starts_with("ci.") && viewer.starts_with("dashboards."));

    let as_viewer = common::http_as(port, "GET", "/v1/mirror/sources", "", Some(&viewer));
    assert_eq!(status_of(&as_viewer), "200", "{as_viewer}");
    let refused = common::http_as(port, "POST", "/v1/mirror/sources", source, Some(&viewer));
    assert_eq!(status_of(&refused), "403", "{refused}");
    assert!(
        refused.contains(r#"token \"dashboards\" has the viewer role"#),
        "{refused}"
    );
    let added = common::http_as(port, "POST", "/v1/mirror/sources", source, Some(&operator));
    assert!(status_of(&added).starts_with('2'), "{added}");
    // The route the gate judges is the route served: no doubled prefix
    // turns an admin route into an operator one.
    for sneaky in ["/v1//v1/tokens", "/v1/v1/tokens", "/v1//tokens"] {
        let body = r#"{"name":"escalated","role":"admin"}"#;
        let answer = common::http_as(port, "POST", sneaky, body, Some(&operator));
        assert!(!status_of(&answer).starts_with('2'), "{sneaky}: {answer}");
    }
    // Users and tokens are the admin's.
    let out = kafscale_as(&b, &operator, &["tokens", "add", "mine", "--role", "admin"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("has the operator role")
    );
    let out = kafscale_as(&b, &viewer, &["users", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Listed without secrets; a removed token is refused from then on.
    let out = kafscale_as(&b, &admin, &["tokens", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["role"].as_str().unwrap()))
        .collect();
    for want in [
        ("admin-0", "admin"),
        ("broker-0", "viewer"),
        ("ci", "operator"),
        ("dashboards", "viewer"),
    ] {
        assert!(names.contains(&want), "{want:?} not in {names:?}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains(operator.split('.').nth(1).unwrap()));
    let out = kafscale_as(&b, &admin, &["tokens", "remove", "ci"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = common::http_as(port, "GET", "/v1/mirror/sources", "", Some(&operator));
    assert_eq!(status_of(&gone), "401", "{gone}");

    let log = b.log();
    for want in [
        r#""principal":"Token:ci","host":"127.0.0.1","action":"POST /v1/mirror/sources","target":"s1","outcome":"ok""#,
        r#""principal":"HTTP:ANONYMOUS","host":"127.0.0.1","action":"POST /v1/mirror/sources","target":"/v1/mirror/sources","outcome":"refused: POST /v1/mirror/sources needs a bearer token"#,
        r#""principal":"Token:admin-0","host":"127.0.0.1","action":"DELETE /v1/tokens/ci","target":"/v1/tokens/ci","outcome":"ok""#,
        r#""principal":"Token:dashboards","host":"127.0.0.1","action":"POST /v1/mirror/sources","target":"/v1/mirror/sources","outcome":"refused: token \"dashboards\" has the viewer role"#,
    ] {
        assert!(log.contains(want), "{want} not in:\n{log}");
    }
    for secret in [&admin, &operator, &viewer] {
        assert!(
            !log.contains(secret.split('.').nth(1).unwrap()),
            "a token secret is in the log"
        );
    }
    drop(b);

    let b = common::start_with(&["--http-auth-all"]);
    let closed = common::http(b.metrics_port, "GET", "/metrics", "");
    assert_eq!(status_of(&closed), "401", "{closed}");
    let open = common::http_as(b.metrics_port, "GET", "/metrics", "", Some(&b.token()));
    assert_eq!(status_of(&open), "200");
}

/// The audit trail is also the read-only topic `__kafscale_audit`: what
/// the log records shows up there as records (value the JSON line, header
/// `broker`), and no client may produce to it or delete it.
#[test]
fn the_audit_trail_is_a_topic_no_client_can_change() {
    let mut b = common::start();
    let bootstrap = format!("127.0.0.1:{}", b.port);
    let deleted = {
        let bootstrap = bootstrap.clone();
        kafscale_shard::block_on(move || async move {
            let c = Client::connect(ClientConfig::new(bootstrap)).await.unwrap();
            let made = c
                .create_topics(
                    &[kafscale_client::NewTopic::new("orders", 2)],
                    Duration::from_secs(10),
                )
                .await;
            assert!(made.iter().all(Result::is_ok), "{made:?}");
            // Wait for the brokers' topics, then try to delete them.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let own = ["__kafscale_audit", "__kafscale_offsets"];
            while c.metadata(&own).await.map_or(true, |m| {
                own.iter()
                    .any(|name| m.topic(name).is_none_or(|t| t.partitions.is_empty()))
            }) {
                assert!(std::time::Instant::now() < deadline, "no audit topic");
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
            // Marked internal, as __consumer_offsets is: pattern
            // subscriptions leave them out.
            let m = c.metadata(&own).await.unwrap();
            for name in own {
                assert!(m.topic(name).is_some_and(|t| t.internal), "{name}");
            }
            let orders = c.metadata(&["orders"]).await.unwrap();
            assert!(orders.topic("orders").is_some_and(|t| !t.internal));
            // The offset history is the brokers' too.
            let history = c
                .delete_topics(&["__kafscale_offsets"], Duration::from_secs(10))
                .await
                .remove(0)
                .map_err(|e| e.to_string());
            assert!(
                history.as_ref().is_err_and(
                    |e| e.contains("history of consumer group offsets and cannot be deleted")
                ),
                "{history:?}"
            );
            c.delete_topics(&["__kafscale_audit"], Duration::from_secs(10))
                .await
                .remove(0)
                .map_err(|e| e.to_string())
        })
        .unwrap()
    };
    let why = deleted.expect_err("the audit topic was deleted");
    let grown = {
        let bootstrap = bootstrap.clone();
        kafscale_shard::block_on(move || async move {
            let c = Client::connect(ClientConfig::new(bootstrap)).await.unwrap();
            c.create_partitions("__kafscale_audit", 128, Duration::from_secs(10))
                .await
                .map_err(|e| e.to_string())
        })
        .unwrap()
    };
    assert!(
        grown.as_ref().is_err_and(|e| e.contains("audit trail")),
        "{grown:?}"
    );
    assert!(why.contains("audit trail and cannot be deleted"), "{why}");

    let read = || {
        let out = kcat(
            &[
                "-b",
                &bootstrap,
                "-C",
                "-t",
                "__kafscale_audit",
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%h|%s\n",
            ],
            "",
        );
        stdout_lines(&out)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let want = r#""principal":"User:ANONYMOUS","host":"127.0.0.1","action":"DeleteTopics","target":"topic __kafscale_audit","outcome":"refused: the brokers' audit trail""#;
    let records = loop {
        let records = read();
        if records.iter().any(|r| r.contains(want)) {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not in the topic: {records:?}\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // kcat auto-creates a topic by producing to it: recorded as well.
    let out = kcat(&["-b", &bootstrap, "-P", "-t", "auto-made"], "x\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auto = r#""action":"CreateTopics","target":"topic auto-made, 1 partitions (auto-created by Metadata)","outcome":"ok""#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !read().iter().any(|r| r.contains(auto)) {
        assert!(
            std::time::Instant::now() < deadline,
            "auto-creation not in the trail: {:?}",
            read()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let created = records
        .iter()
        .find(|r| {
            r.contains(
                r#""action":"CreateTopics","target":"topic orders, 2 partitions","outcome":"ok""#,
            )
        })
        .unwrap_or_else(|| panic!("{records:?}"));
    assert!(created.starts_with("broker=0|{\"time\":"), "{created}");

    // Producing to it is refused, and nothing is added.
    let before = read().len();
    let out = kcat(
        &["-b", &bootstrap, "-P", "-t", "__kafscale_audit"],
        "forged\n",
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Invalid topic"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(read().iter().all(|r| !r.ends_with("|forged")));
    assert!(read().len() >= before);

    // What happens just before a broker stops is in the trail too: the
    // stopping broker appends its last lines before it drains.
    let bootstrap2 = bootstrap.clone();
    kafscale_shard::block_on(move || async move {
        let c = Client::connect(ClientConfig::new(bootstrap2))
            .await
            .unwrap();
        let made = c
            .create_topics(
                &[kafscale_client::NewTopic::new("last-words", 1)],
                Duration::from_secs(10),
            )
            .await;
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    })
    .unwrap();
    b.stop_and_restart();
    let last =
        r#""action":"CreateTopics","target":"topic last-words, 1 partitions","outcome":"ok""#;
    let records = read();
    assert!(
        records.iter().any(|r| r.contains(last)),
        "the last second before the stop is not in the topic: {records:?}\n{}",
        b.log()
    );
}

/// A connection that says nothing is closed once `--frame-read-timeout-ms`
/// has passed: before its first request on a plaintext listener, before its
/// TLS handshake on the TLS ones, so silent connections hold no place.
#[test]
fn silent_connections_are_closed_after_the_frame_deadline() {
    use std::io::Read;
    let s = Secure::start(&["--frame-read-timeout-ms", "1500"]);
    for (name, port) in [
        ("PLAINTEXT", s.broker.port),
        ("SSL", s.ssl),
        ("SASL_SSL", s.sasl_ssl),
        ("SASL_PLAINTEXT", s.sasl_plaintext),
    ] {
        // Before connecting: the broker's deadline starts at its accept.
        let started = std::time::Instant::now();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 1];
        let got = c.read(&mut b);
        let waited = started.elapsed();
        assert!(
            matches!(got, Ok(0))
                || got
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{name}: {got:?} after {waited:?}"
        );
        assert!(
            waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
            "{name}: closed after {waited:?}, not at the deadline"
        );
    }
}

/// PLAIN checks (PBKDF2 over the stored SCRAM credential, here at 16384
/// iterations) run on the hasher thread, not on a shard: while a flood of
/// PLAIN sign-ins is hashed, every shard still answers at once.
#[test]
fn a_flood_of_plain_sign_ins_never_blocks_a_shard() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let s = Secure::start(&["--sasl-mechanisms", "SCRAM-SHA-512,PLAIN"]);
    s.users(
        &[
            "add",
            "carol",
            "--mechanism",
            "SCRAM-SHA-512",
            "--iterations",
            "16384",
            "--password-stdin",
        ],
        Some("carol-slow-hash"),
    );
    let flooding = Arc::new(AtomicBool::new(true));
    // The probe: ApiVersions on the PLAINTEXT listener, a new connection
    // each time (they spread over the shards), for as long as the flood.
    let probe = {
        let (flooding, port) = (flooding.clone(), s.broker.port);
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while flooding.load(Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let req = ApiVersionsRequest::default();
                common::call(&mut c, ApiKey::ApiVersions, 0, &req).expect("ApiVersions answer");
                worst = worst.max(started.elapsed());
                probes += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (worst, probes)
        })
    };
    let started = std::time::Instant::now();
    let signers: Vec<_> = (0..16)
        .map(|_| {
            let port = s.sasl_plaintext;
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                assert_eq!(handshake(&mut c, 1, "PLAIN").error_code, 0);
                let token = b"\0carol\0carol-slow-hash".to_vec();
                let answer = authenticate(&mut c, token).expect("an answer");
                assert_eq!(answer.error_code, 0, "{answer:?}");
            })
        })
        .collect();
    for t in signers {
        t.join().unwrap();
    }
    let flood = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let (worst, probes) = probe.join().unwrap();
    // A shard hashing would hold a probe for a good part of the flood.
    assert!(probes >= 2, "{probes} probes in {flood:?}");
    assert!(
        worst < (flood / 4).max(Duration::from_millis(300)),
        "a probe waited {worst:?} while 16 PLAIN sign-ins took {flood:?}"
    );
}
