"""A SASL/TLS client run by tests/security.rs: produce or consume with
confluent-kafka or kafka-python and print JSON.

    sasl_client.py CLIENT ACTION CONFIG_JSON
      CLIENT  confluent | kafka-python
      ACTION  produce | consume | produce-slowly | authorized | init-transactions
      CONFIG  {"bootstrap", "protocol", "mechanism", "user", "password",
               "ca", "topic", "count", "seconds", "group"}; kafka-python
               also takes protocol SSL with "cert" and "key" (mutual TLS)

Prints {"ok": true, "values": [...]} or {"ok": false, "error": "..."}; the
exit status is 0 either way, so the caller asserts on what happened.
"""
import json
import sys
import time


def confluent(action, c):
    from confluent_kafka import Consumer, KafkaException, Producer

    conf = {
        "bootstrap.servers": c["bootstrap"],
        "security.protocol": c["protocol"],
        "sasl.mechanisms": c["mechanism"],
        "sasl.username": c["user"],
        "sasl.password": c["password"],
    }
    if c.get("ca"):
        conf["ssl.ca.location"] = c["ca"]
    errors = []  # distinct, in order: a retrying client repeats itself

    def on_error(e):
        if str(e) not in errors:
            errors.append(str(e))

    conf["error_cb"] = on_error
    if action in ("produce", "produce-slowly"):
        p = Producer({**conf, "enable.idempotence": True, "message.timeout.ms": 20000})
        failed = []

        def report(err, msg):
            if err is not None and str(err) not in failed:
                failed.append(str(err))

        values = []
        for i in range(c["count"]):
            v = f"{c['topic']}-{i}"
            p.produce(c["topic"], v.encode(), on_delivery=report)
            values.append(v)
            if action == "produce-slowly":
                # Spread over c["seconds"], so sessions end in between
                # (poll returns early once a delivery report is served).
                time.sleep(c["seconds"] / c["count"])
                p.poll(0)
        left = p.flush(30)
        if failed or left:
            return {"ok": False, "error": "; ".join(failed + errors) or f"{left} undelivered"}
        return {"ok": True, "values": values}
    if action == "init-transactions":
        # A transactional producer's first step (FindCoordinator for its
        # transactional id, then InitProducerId).
        p = Producer({**conf, "transactional.id": c.get("group") or "txn"})
        try:
            p.init_transactions(15)
        except KafkaException as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "values": []}
    if action == "authorized":
        # KIP-430: what the admin client is told it may do.
        from confluent_kafka import TopicCollection
        from confluent_kafka.admin import AdminClient
        a = AdminClient(conf)
        try:
            t = a.describe_topics(TopicCollection([c["topic"]]), include_authorized_operations=True)[c["topic"]].result(20)
            cl = a.describe_cluster(include_authorized_operations=True).result(20)
        except KafkaException as e:
            return {"ok": False, "error": str(e)}
        names = lambda ops: sorted(o.name for o in (ops or []))
        return {"ok": True, "topic": names(t.authorized_operations), "cluster": names(cl.authorized_operations)}
    group = c.get("group") or f"g-{time.time()}"
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([c["topic"]])
    values, deadline = [], time.time() + 30
    try:
        while len(values) < c["count"] and time.time() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                if errors and any("Authentication" in e for e in errors):
                    break
                continue
            if m.error():
                raise KafkaException(m.error())
            values.append(m.value().decode())
    except KafkaException as e:
        return {"ok": False, "error": str(e)}
    finally:
        consumer.close()
    if len(values) < c["count"]:
        return {"ok": False, "error": "; ".join(errors) or f"only {len(values)} records"}
    return {"ok": True, "values": values}


def kafka_python(action, c):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError

    conf = dict(bootstrap_servers=c["bootstrap"], security_protocol=c["protocol"])
    if c["protocol"].startswith("SASL"):
        conf.update(
            sasl_mechanism=c["mechanism"],
            sasl_plain_username=c["user"],
            sasl_plain_password=c["password"],
        )
    if c.get("ca"):
        conf["ssl_cafile"] = c["ca"]
    if c.get("cert"):  # mutual TLS: the client's certificate and key
        conf["ssl_certfile"], conf["ssl_keyfile"] = c["cert"], c["key"]
    try:
        if action == "produce":
            p = KafkaProducer(**conf)
            values = [f"{c['topic']}-{i}" for i in range(c["count"])]
            for v in values:
                p.send(c["topic"], v.encode()).get(timeout=20)
            p.close()
            return {"ok": True, "values": values}
        consumer = KafkaConsumer(c["topic"], auto_offset_reset="earliest",
                                 consumer_timeout_ms=10000, **conf)
        values = []
        for m in consumer:
            values.append(m.value.decode())
            if len(values) >= c["count"]:
                break
        consumer.close()
        return {"ok": True, "values": values}
    except KafkaError as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    except Exception as e:  # kafka-python raises plain errors for some auth failures
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def main():
    client, action, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    run = confluent if client == "confluent" else kafka_python
    print(json.dumps(run(action, config)))


if __name__ == "__main__":
    main()
