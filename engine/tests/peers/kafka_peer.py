"""A Kafka peer built on confluent-kafka (librdkafka's Python client), for the engine's tests.

usage:
  kafka_peer.py BOOTSTRAP create TOPIC PARTITIONS
  kafka_peer.py BOOTSTRAP produce TOPIC START COUNT   (readings seq START..START+COUNT-1)
  kafka_peer.py BOOTSTRAP produce-raw TOPIC TEXT      (one message, as is)
  kafka_peer.py BOOTSTRAP produce-hex TOPIC HEX       (one message of the bytes HEX spells)
  kafka_peer.py BOOTSTRAP produce-keyed TOPIC KEY=VALUE…  (messages in order; KEY= alone is a
                                                        tombstone, =VALUE has no key)
  kafka_peer.py BOOTSTRAP produce-registry TOPIC START COUNT
                                                       (message i: key s{i%500}, a tombstone when
                                                        i%7 == 3, else {"room": "r{i}"})
  kafka_peer.py BOOTSTRAP consume TOPIC COUNT         (prints "key<TAB>value" lines)
  kafka_peer.py BOOTSTRAP consume-ids TOPIC           (every message there is, as
                                                        "vibelux-row-id header<TAB>value" lines)

Reading i is {"sensor_id": "s{i%10}", "ts": ..., "seq": i, "temp_c": i/100}, keyed by its
sensor, so a sensor's readings share a partition.
"""
import datetime
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, command = sys.argv[1], sys.argv[2]

if command == "create":
    topic, partitions = sys.argv[3], int(sys.argv[4])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
elif command in ("produce", "produce-raw", "produce-hex", "produce-keyed", "produce-registry"):
    topic = sys.argv[3]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    failures = []

    def report(error, message):
        if error is not None:
            failures.append(error)

    if command == "produce-raw":
        producer.produce(topic, sys.argv[4].encode(), key=b"raw", on_delivery=report)
    elif command == "produce-hex":
        producer.produce(topic, bytes.fromhex(sys.argv[4]), key=b"raw", on_delivery=report)
    elif command == "produce-registry":
        start, count = int(sys.argv[4]), int(sys.argv[5])
        for i in range(start, start + count):
            value = None if i % 7 == 3 else f'{{"room": "r{i}"}}'.encode()
            while True:
                try:
                    producer.produce(topic, value, key=f"s{i % 500}".encode(), on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    elif command == "produce-keyed":
        for message in sys.argv[4:]:
            key, value = message.split("=", 1)
            producer.produce(
                topic,
                value.encode() if value else None,
                key=key.encode() if key else None,
                on_delivery=report,
            )
            # One at a time, in order: a table's result depends on it.
            producer.flush(30)
    else:
        start, count = int(sys.argv[4]), int(sys.argv[5])
        epoch = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
        for i in range(start, start + count):
            stamp = (epoch + datetime.timedelta(milliseconds=10 * i)).isoformat().replace("+00:00", "Z")
            value = f'{{"sensor_id": "s{i % 10}", "ts": "{stamp}", "seq": {i}, "temp_c": {i / 100}}}'
            while True:
                try:
                    producer.produce(topic, value.encode(), key=f"s{i % 10}".encode(), on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    left = producer.flush(60)
    if left or failures:
        print(f"undelivered {left}, failed {failures[:3]}", file=sys.stderr)
        sys.exit(1)
elif command == "consume":
    topic, count = sys.argv[3], int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-reader-{topic}",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    seen = 0
    idle = 0
    while seen < count and idle < 300:
        message = consumer.poll(0.1)
        if message is None or message.error():
            idle += 1
            continue
        idle = 0
        seen += 1
        key = (message.key() or b"").decode()
        print(f"{key}\t{message.value().decode()}", flush=True)
    consumer.close()
elif command == "consume-ids":
    topic = sys.argv[3]
    # A sink checkpointed every 50 ms (as the tests run it) leaves thousands of small batches,
    # which Tansu serves slowly: a default 1 MiB fetch can outlast the request's timeout and
    # be retried for ever. Smaller fetches, and time for each, keep it moving; the sink writes
    # no transactions, so nothing needs the committed-only reads Tansu is slowest at.
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-ids-{topic}",
        "auto.offset.reset": "earliest",
        "max.partition.fetch.bytes": 16384,
        "socket.timeout.ms": 120000,
        "isolation.level": "read_uncommitted",
    })
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    # Everything there is now: up to each partition's high watermark.
    ends = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        if high > low:
            ends[partition] = high
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in ends])
    # Where each partition's next message is, for the message if it never comes.
    following = {partition: OFFSET_BEGINNING for partition in ends}
    idle = 0
    while ends and idle < 1200:
        message = consumer.poll(0.1)
        if message is None or message.error():
            if message is not None:
                print(f"fetch: {message.error()}", file=sys.stderr, flush=True)
            idle += 1
            continue
        idle = 0
        following[message.partition()] = message.offset() + 1
        headers = dict(message.headers() or [])
        row_id = (headers.get("vibelux-row-id") or b"").decode()
        print(f"{row_id}\t{message.value().decode()}", flush=True)
        if message.offset() + 1 >= ends.get(message.partition(), 0):
            ends.pop(message.partition(), None)
    consumer.close()
    if ends:
        sys.exit(f"partitions not read to their end: {ends}; read up to {following}")
else:
    sys.exit(f"unknown command {command}")
