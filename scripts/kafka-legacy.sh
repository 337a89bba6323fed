#!/usr/bin/env bash
# An Apache Kafka broker that still writes the old message formats, for the
# test of a mirror source whose topics are in message format v0/v1 (Kafka
# before 0.11, or a newer broker configured down to it). Kafka 4 cannot write
# them, so this is Kafka 3.9 in ZooKeeper mode with
# inter.broker.protocol.version=2.8 and log.message.format.version=0.10.2
# (every topic's default: produced batches are stored, and fetched, as v1
# message sets; a topic created with message.format.version=2.8 stores
# record batches v2). PLAINTEXT only, on free loopback ports. The jars come
# from the cache that scripts/setup fills (fetch_legacy_kafka, with mvn, as
# scripts/kafka.sh fetches the current broker's).
#
# Sourced after scripts/kafka.sh (scripts/test):
#   start_legacy_kafka; ...; stop_legacy_kafka
#   requires: $work (a temporary directory; files go to $work/kafka-legacy)
#   exports:  KAFSCALE_TEST_LEGACY_KAFKA   127.0.0.1:port (PLAINTEXT)

KAFSCALE_LEGACY_KAFKA_VERSION=3.9.1
KAFSCALE_LEGACY_KAFKA_HOME="${KAFSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kafscale}/kafka-$KAFSCALE_LEGACY_KAFKA_VERSION"
LEGACY_KAFKA_PID=""
LEGACY_ZK_PID=""

# The same fetch as the current broker's (scripts/kafka.sh), at 3.9.1.
fetch_legacy_kafka() {
  KAFSCALE_KAFKA_VERSION=$KAFSCALE_LEGACY_KAFKA_VERSION \
    KAFSCALE_KAFKA_HOME=$KAFSCALE_LEGACY_KAFKA_HOME fetch_kafka
}

start_legacy_kafka() {
  local dir p_zk p_kafka deadline
  if ! [ -f "$KAFSCALE_LEGACY_KAFKA_HOME/.complete" ]; then
    kafka_log "Apache Kafka $KAFSCALE_LEGACY_KAFKA_VERSION is not in $KAFSCALE_LEGACY_KAFKA_HOME (run scripts/setup)"
    return 1
  fi
  dir="$work/kafka-legacy"
  mkdir -p "$dir/zk" "$dir/data"
  p_zk=$(kafka_free_port)
  p_kafka=$(kafka_free_port)
  printf '%s\n' "dataDir=$dir/zk" "clientPort=$p_zk" "clientPortAddress=127.0.0.1" \
    "maxClientCnxns=0" "admin.enableServer=false" >"$dir/zk.properties"
  {
    echo "broker.id=1"
    echo "zookeeper.connect=127.0.0.1:$p_zk"
    echo "listeners=PLAINTEXT://127.0.0.1:$p_kafka"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$p_kafka"
    echo "log.dirs=$dir/data"
    echo "num.partitions=1"
    echo "offsets.topic.replication.factor=1"
    echo "offsets.topic.num.partitions=1"
    echo "transaction.state.log.replication.factor=1"
    echo "transaction.state.log.min.isr=1"
    echo "group.initial.rebalance.delay.ms=0"
    echo "log.retention.ms=-1"
    # Below 3.0 the message format is honoured (KIP-724): v1 by default.
    echo "inter.broker.protocol.version=2.8"
    echo "log.message.format.version=0.10.2"
  } >"$dir/server.properties"
  # Kafka 3.9 logs through slf4j's reload4j binding (log4j 1 properties).
  printf '%s\n' "log4j.rootLogger=INFO, out" "log4j.appender.out=org.apache.log4j.ConsoleAppender" \
    "log4j.appender.out.layout=org.apache.log4j.PatternLayout" \
    "log4j.appender.out.layout.ConversionPattern=[%d] %p %m (%c)%n" >"$dir/log4j.properties"
  # The fetched jars hold two slf4j bindings; reload4j's goes first on the
  # class path, so the log4j 1 properties above are the ones used.
  local libs="$KAFSCALE_LEGACY_KAFKA_HOME/libs" first
  first=$(ls "$libs"/slf4j-reload4j-*.jar "$libs"/reload4j-*.jar 2>/dev/null | tr '\n' ':' || true)
  local java=(java -Xms64m -Xmx256m -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    -Dlog4j.configuration="file:$dir/log4j.properties" -cp "$first$libs/*")
  "${java[@]}" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zk.properties" \
    >"$dir/zk.log" 2>&1 &
  LEGACY_ZK_PID=$!
  deadline=$((SECONDS + 60))
  until (exec 3<>"/dev/tcp/127.0.0.1/$p_zk") 2>/dev/null; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$LEGACY_ZK_PID" 2>/dev/null; then
      kafka_log "ZooKeeper for Kafka $KAFSCALE_LEGACY_KAFKA_VERSION did not start; its log:"
      tail -30 "$dir/zk.log" >&2
      stop_legacy_kafka
      return 1
    fi
    sleep 0.2
  done
  "${java[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  LEGACY_KAFKA_PID=$!
  deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$LEGACY_KAFKA_PID" 2>/dev/null; then
      kafka_log "Apache Kafka $KAFSCALE_LEGACY_KAFKA_VERSION exited during start-up; its log:"
      tail -50 "$dir/kafka.log" >&2
      LEGACY_KAFKA_PID=""
      stop_legacy_kafka
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$p_kafka") 2>/dev/null && kafka_serves "127.0.0.1:$p_kafka"; then
      export KAFSCALE_TEST_LEGACY_KAFKA="127.0.0.1:$p_kafka"
      return 0
    fi
    sleep 0.5
  done
  kafka_log "Apache Kafka $KAFSCALE_LEGACY_KAFKA_VERSION did not serve within 90 s; its log:"
  tail -50 "$dir/kafka.log" >&2
  stop_legacy_kafka
  return 1
}

stop_legacy_kafka() {
  local pid
  for pid in "$LEGACY_KAFKA_PID" "$LEGACY_ZK_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  LEGACY_KAFKA_PID=""
  LEGACY_ZK_PID=""
}
