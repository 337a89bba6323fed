# Sourced by scripts/test and the benchmark scripts: starts etcd, an S3
# server (minio if on PATH, else s3s-fs) and moto (object lock) on free loopback ports with data
# under $work, exports their endpoints, and stops them on exit.
#   requires: $work (a temporary directory); sets KAFSCALE_TEST_* variables.

pids=()
cleanup_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() { # name port log
  local name=$1 port=$2 log=$3
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start listening on 127.0.0.1:$port; its log:" >&2
  cat "$log" >&2
  return 1
}

start_servers() {
  local etcd_port etcd_peer s3_port
  etcd_port=$(free_port)
  etcd_peer=$(free_port)
  etcd --name kafscale-test --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "kafscale-test=http://127.0.0.1:$etcd_peer" >"$work/etcd.log" 2>&1 &
  pids+=($!)
  ETCD_PID=$!

  s3_port=$(free_port)
  export KAFSCALE_TEST_S3_ACCESS_KEY=kafscale-test
  export KAFSCALE_TEST_S3_SECRET_KEY=kafscale-test-secret
  mkdir -p "$work/s3"
  if command -v minio >/dev/null 2>&1; then
    KAFSCALE_TEST_S3_SERVER=minio
    MINIO_ROOT_USER=$KAFSCALE_TEST_S3_ACCESS_KEY MINIO_ROOT_PASSWORD=$KAFSCALE_TEST_S3_SECRET_KEY \
      minio server --quiet --address "127.0.0.1:$s3_port" "$work/s3" >"$work/s3.log" 2>&1 &
  else
    KAFSCALE_TEST_S3_SERVER=s3s-fs
    s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key "$KAFSCALE_TEST_S3_ACCESS_KEY" \
      --secret-key "$KAFSCALE_TEST_S3_SECRET_KEY" "$work/s3" >"$work/s3.log" 2>&1 &
  fi
  pids+=($!)
  S3_PID=$!
  export KAFSCALE_TEST_S3_SERVER

  # moto enforces object lock (versions, retention, refused deletes), which
  # neither minio without its own setup nor s3s-fs does.
  local moto_port
  moto_port=$(free_port)
  python3 -m moto.server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
  pids+=($!)

  wait_for_port etcd "$etcd_port" "$work/etcd.log"
  wait_for_port "$KAFSCALE_TEST_S3_SERVER" "$s3_port" "$work/s3.log"
  wait_for_port moto "$moto_port" "$work/moto.log"
  export KAFSCALE_TEST_ETCD_ENDPOINTS="http://127.0.0.1:$etcd_port"
  export KAFSCALE_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export KAFSCALE_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
}
