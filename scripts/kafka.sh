#!/usr/bin/env bash
# A real Apache Kafka broker for the tests: one KRaft node (broker and
# controller in one JVM) on free loopback ports, with four client listeners:
#   PLAINTEXT, SASL_PLAINTEXT, SASL_SSL and SSL (mutual TLS), the SASL ones taking SCRAM-SHA-256,
#   SCRAM-SHA-512 and PLAIN for one user; TLS from a CA made for this run.
# The jars come from the cache that scripts/setup fills (fetch_kafka, with mvn).
#
# Sourced (scripts/test):   source scripts/kafka.sh; start_kafka; ...; stop_kafka
#   requires: $work (a temporary directory; the broker's files go to $work/kafka)
#   exports:  KAFSCALE_TEST_KAFKA_PLAINTEXT       127.0.0.1:port, no auth
#             KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT  127.0.0.1:port, SASL without TLS
#             KAFSCALE_TEST_KAFKA_SASL_SSL        127.0.0.1:port, SASL over TLS
#             KAFSCALE_TEST_KAFKA_SSL             127.0.0.1:port, mutual TLS (client certificate required)
#             KAFSCALE_TEST_KAFKA_CA              CA certificate (PEM) of the TLS listeners
#             KAFSCALE_TEST_KAFKA_CLIENT_CERT     client certificate (PEM) from that CA, and
#             KAFSCALE_TEST_KAFKA_CLIENT_KEY      its key, for the SSL listener
#             KAFSCALE_TEST_KAFKA_USER            SASL user (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)
#             KAFSCALE_TEST_KAFKA_PASSWORD        its password
#             KAFSCALE_TEST_KAFKA_VERSION         the Apache Kafka version running
#             KAFSCALE_KAFKA_CLASSPATH            <jar dir>/*, for `java -cp` of Kafka's tools
#                                                 (and the Java client) at that version
# Standalone (a person):   scripts/kafka.sh run     # prints the endpoints, Ctrl-C stops
#                          scripts/kafka.sh fetch   # only fills the cache

KAFSCALE_KAFKA_VERSION=${KAFSCALE_KAFKA_VERSION:-4.1.1}
KAFSCALE_KAFKA_HOME="${KAFSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafscale}/kafka-$KAFSCALE_KAFKA_VERSION"
KAFKA_PID=""

kafka_log() { printf 'kafka: %s\n' "$*" >&2; }

kafka_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Copies the broker, tools and client jars with their runtime dependencies into
# $KAFSCALE_KAFKA_HOME/libs, once: the marker (the version and the pom's
# checksum) is written only after a complete copy, so an interrupted fetch, or
# one from an older pom, is done again.
fetch_kafka() {
  local here pom want
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  pom="$here/kafka/pom.xml"
  want="$KAFSCALE_KAFKA_VERSION $(sha256sum "$pom" | cut -c1-16)"
  if [ "$(cat "$KAFSCALE_KAFKA_HOME/.complete" 2>/dev/null)" = "$want" ]; then return 0; fi
  kafka_log "fetching Apache Kafka $KAFSCALE_KAFKA_VERSION with mvn into $KAFSCALE_KAFKA_HOME"
  mkdir -p "$KAFSCALE_KAFKA_HOME"
  rm -rf "$KAFSCALE_KAFKA_HOME/libs" "$KAFSCALE_KAFKA_HOME/libs.partial"
  # Nothing is built: the pom only lists the artifacts. mvn's output goes to
  # a log that is shown when it fails.
  if ! mvn -q -B -Dstyle.color=never -f "$pom" -Dkafka.version="$KAFSCALE_KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFSCALE_KAFKA_HOME/libs.partial" >"$KAFSCALE_KAFKA_HOME/fetch.log" 2>&1; then
    kafka_log "mvn failed; its output:"
    cat "$KAFSCALE_KAFKA_HOME/fetch.log" >&2
    return 1
  fi
  if ! [ -f "$KAFSCALE_KAFKA_HOME/libs.partial/kafka_2.13-$KAFSCALE_KAFKA_VERSION.jar" ]; then
    kafka_log "mvn finished but kafka_2.13-$KAFSCALE_KAFKA_VERSION.jar is missing"
    return 1
  fi
  mv "$KAFSCALE_KAFKA_HOME/libs.partial" "$KAFSCALE_KAFKA_HOME/libs"
  echo "$want" >"$KAFSCALE_KAFKA_HOME/.complete"
}

# Java for one Kafka tool: small heap, quick start (C1 only).
kafka_java() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -Xshare:auto \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2-tools.properties" \
    -cp "$KAFSCALE_KAFKA_HOME/libs/*" "$@"
}

# A CA and a server certificate for 127.0.0.1 and localhost, valid two days.
kafka_certs() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=kafscale test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/server.pem" -days 2 -extfile "$d/server.ext" 2>/dev/null
  # A client certificate from the same CA, for the mutual-TLS listener.
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/client.key" -out "$d/client.csr" -subj "/CN=kafscale-client" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" >"$d/client.ext"
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/client.pem" -days 2 -extfile "$d/client.ext" 2>/dev/null
}

# A PEM file as one properties value: lines joined by "\" continuations
# (Kafka's PEM reader ignores the whitespace between them).
kafka_pem_value() {
  sed -e 's/$/ \\/' "$1" | sed -e '$ s/ \\$//'
}

start_kafka() {
  local p_plain p_sasl p_ssl p_mtls p_ctl cluster_id user password jaas_plain jaas_scram l
  if ! [ -f "$KAFSCALE_KAFKA_HOME/.complete" ]; then
    kafka_log "Apache Kafka $KAFSCALE_KAFKA_VERSION is not in $KAFSCALE_KAFKA_HOME (run scripts/setup)"
    return 1
  fi
  KAFKA_DIR="$work/kafka"
  mkdir -p "$KAFKA_DIR/data"
  kafka_certs "$KAFKA_DIR" || { kafka_log "openssl could not make the certificates"; return 1; }

  p_plain=$(kafka_free_port)
  p_sasl=$(kafka_free_port)
  p_ssl=$(kafka_free_port)
  p_mtls=$(kafka_free_port)
  p_ctl=$(kafka_free_port)
  user=kafscale
  password="kafscale-$(python3 -c 'import secrets; print(secrets.token_hex(8))')"
  # A Kafka cluster id: 16 random bytes in URL-safe base64; not one starting
  # with "-", which the tool's argument parser would take for an option.
  cluster_id=$(python3 -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break')
  jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_$user=\"$password\";"
  jaas_scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"

  {
    echo "process.roles=broker,controller"
    echo "node.id=1"
    echo "controller.quorum.voters=1@127.0.0.1:$p_ctl"
    echo "controller.listener.names=CONTROLLER"
    echo "listeners=PLAINTEXT://127.0.0.1:$p_plain,SASL_PLAINTEXT://127.0.0.1:$p_sasl,SASL_SSL://127.0.0.1:$p_ssl,SSL://127.0.0.1:$p_mtls,CONTROLLER://127.0.0.1:$p_ctl"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$p_plain,SASL_PLAINTEXT://127.0.0.1:$p_sasl,SASL_SSL://127.0.0.1:$p_ssl,SSL://127.0.0.1:$p_mtls"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "log.dirs=$KAFKA_DIR/data"
    echo "num.partitions=1"
    echo "offsets.topic.replication.factor=1"
    echo "offsets.topic.num.partitions=4"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    echo "share.coordinator.state.topic.replication.factor=1"
    echo "share.coordinator.state.topic.min.isr=1"
    echo "group.initial.rebalance.delay.ms=0"
    # The log cleaner looks for work every half second (default 15 s), so
    # tests of compacted topics see compaction soon.
    echo "log.cleaner.backoff.ms=500"
    # Tests write records with fixed timestamps from 2023: time-based
    # retention (7 days by default) would delete them within minutes.
    echo "log.retention.ms=-1"
    echo "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"
    # Kafka's default, written out: the largest SASL frame a client may send
    # before it is authenticated.
    echo "sasl.server.max.receive.size=524288"
    for l in sasl_plaintext sasl_ssl; do
      echo "listener.name.$l.plain.sasl.jaas.config=$jaas_plain"
      echo "listener.name.$l.scram-sha-256.sasl.jaas.config=$jaas_scram"
      echo "listener.name.$l.scram-sha-512.sasl.jaas.config=$jaas_scram"
    done
    # Sessions that expire (KIP-368, as Confluent Cloud sets them), for one
    # mechanism on one listener only: clients must re-authenticate on a
    # connection that lives longer than this.
    echo "listener.name.sasl_plaintext.scram-sha-256.connections.max.reauth.ms=3000"
    echo "listener.name.sasl_ssl.ssl.keystore.type=PEM"
    printf 'listener.name.sasl_ssl.ssl.keystore.certificate.chain='
    kafka_pem_value "$KAFKA_DIR/server.pem"
    printf 'listener.name.sasl_ssl.ssl.keystore.key='
    kafka_pem_value "$KAFKA_DIR/server.key"
    echo "listener.name.sasl_ssl.ssl.client.auth=none"
    # SSL: mutual TLS, a client certificate from the test CA required.
    echo "listener.name.ssl.ssl.keystore.type=PEM"
    printf 'listener.name.ssl.ssl.keystore.certificate.chain='
    kafka_pem_value "$KAFKA_DIR/server.pem"
    printf 'listener.name.ssl.ssl.keystore.key='
    kafka_pem_value "$KAFKA_DIR/server.key"
    echo "listener.name.ssl.ssl.truststore.type=PEM"
    printf 'listener.name.ssl.ssl.truststore.certificates='
    kafka_pem_value "$KAFKA_DIR/ca.pem"
    echo "listener.name.ssl.ssl.client.auth=required"
  } >"$KAFKA_DIR/server.properties"

  {
    echo "status=warn"
    echo "appender.out.type=Console"
    echo "appender.out.name=out"
    echo "appender.out.target=SYSTEM_OUT"
    echo "appender.out.layout.type=PatternLayout"
    echo "appender.out.layout.pattern=[%d] %p %m (%c)%n"
    echo "rootLogger.level=INFO"
    echo "rootLogger.appenderRef.out.ref=out"
  } >"$KAFKA_DIR/log4j2.properties"
  # The tools print warnings and errors only, on stderr.
  sed -e 's/SYSTEM_OUT/SYSTEM_ERR/' -e 's/rootLogger.level=INFO/rootLogger.level=WARN/' \
    "$KAFKA_DIR/log4j2.properties" >"$KAFKA_DIR/log4j2-tools.properties"

  if ! kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$user,password=$password]" \
    --add-scram "SCRAM-SHA-512=[name=$user,password=$password]" >"$KAFKA_DIR/format.log" 2>&1; then
    kafka_log "formatting the storage failed:"
    cat "$KAFKA_DIR/format.log" >&2
    return 1
  fi

  java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFSCALE_KAFKA_HOME/libs/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_DIR/kafka.log" 2>&1 &
  KAFKA_PID=$!

  export KAFSCALE_TEST_KAFKA_PLAINTEXT="127.0.0.1:$p_plain"
  export KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT="127.0.0.1:$p_sasl"
  export KAFSCALE_TEST_KAFKA_SASL_SSL="127.0.0.1:$p_ssl"
  export KAFSCALE_TEST_KAFKA_SSL="127.0.0.1:$p_mtls"
  export KAFSCALE_TEST_KAFKA_CA="$KAFKA_DIR/ca.pem"
  export KAFSCALE_TEST_KAFKA_CLIENT_CERT="$KAFKA_DIR/client.pem"
  export KAFSCALE_TEST_KAFKA_CLIENT_KEY="$KAFKA_DIR/client.key"
  export KAFSCALE_TEST_KAFKA_USER="$user"
  export KAFSCALE_TEST_KAFKA_PASSWORD="$password"
  export KAFSCALE_TEST_KAFKA_VERSION="$KAFSCALE_KAFKA_VERSION"
  export KAFSCALE_KAFKA_CLASSPATH="$KAFSCALE_KAFKA_HOME/libs/*"

  # Up means: all three client ports accept connections and a metadata request
  # on the PLAINTEXT one lists this node as a broker (it is unfenced).
  local deadline=$((SECONDS + 90)) port up
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$KAFKA_PID" 2>/dev/null; then
      kafka_log "Apache Kafka exited during start-up; its log:"
      tail -50 "$KAFKA_DIR/kafka.log" >&2
      KAFKA_PID=""
      return 1
    fi
    up=1
    for port in "$p_plain" "$p_sasl" "$p_ssl" "$p_mtls"; do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { up=0; break; }
    done
    if [ $up = 1 ] && kafka_serves "$KAFSCALE_TEST_KAFKA_PLAINTEXT"; then
      return 0
    fi
    sleep 0.5
  done
  kafka_log "Apache Kafka did not serve within 90 s; its log:"
  tail -50 "$KAFKA_DIR/kafka.log" >&2
  stop_kafka
  return 1
}

# Whether a metadata request to $1 lists node 1 as a broker: with the Python
# client when it is installed (no JVM start), else with kafka-topics --list.
kafka_serves() {
  if python3 -c 'import confluent_kafka' 2>/dev/null; then
    python3 - "$1" <<'PY' 2>/dev/null
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0}).list_topics(timeout=5)
sys.exit(0 if 1 in md.brokers else 1)
PY
  else
    timeout 30 java -Xmx128m -XX:TieredStopAtLevel=1 -cp "$KAFSCALE_KAFKA_HOME/libs/*" \
      org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" --list >/dev/null 2>&1
  fi
}

# Stops the JVM: SIGTERM (a controlled shutdown), SIGKILL after 15 s.
stop_kafka() {
  local pid=$KAFKA_PID i
  [ -n "$pid" ] || return 0
  KAFKA_PID=""
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    fetch)
      fetch_kafka
      ;;
    run)
      fetch_kafka
      work=$(mktemp -d -t kafscale-kafka.XXXXXX)
      trap 'stop_kafka; rm -rf "$work"' EXIT
      trap 'exit 130' INT TERM
      start_kafka
      cat <<EOF
Apache Kafka $KAFSCALE_TEST_KAFKA_VERSION is up (pid $KAFKA_PID, files in $work/kafka; Ctrl-C stops it):
export KAFSCALE_TEST_KAFKA_PLAINTEXT=$KAFSCALE_TEST_KAFKA_PLAINTEXT
export KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT=$KAFSCALE_TEST_KAFKA_SASL_PLAINTEXT
export KAFSCALE_TEST_KAFKA_SASL_SSL=$KAFSCALE_TEST_KAFKA_SASL_SSL
export KAFSCALE_TEST_KAFKA_SSL=$KAFSCALE_TEST_KAFKA_SSL
export KAFSCALE_TEST_KAFKA_CA=$KAFSCALE_TEST_KAFKA_CA
export KAFSCALE_TEST_KAFKA_CLIENT_CERT=$KAFSCALE_TEST_KAFKA_CLIENT_CERT
export KAFSCALE_TEST_KAFKA_CLIENT_KEY=$KAFSCALE_TEST_KAFKA_CLIENT_KEY
export KAFSCALE_TEST_KAFKA_USER=$KAFSCALE_TEST_KAFKA_USER
export KAFSCALE_TEST_KAFKA_PASSWORD=$KAFSCALE_TEST_KAFKA_PASSWORD
export KAFSCALE_TEST_KAFKA_VERSION=$KAFSCALE_TEST_KAFKA_VERSION
export KAFSCALE_KAFKA_CLASSPATH='$KAFSCALE_KAFKA_CLASSPATH'
EOF
      wait "$KAFKA_PID" || true
      ;;
    *)
      echo "usage: $0 run | fetch   (or source it and call start_kafka / stop_kafka)" >&2
      exit 2
      ;;
  esac
fi
