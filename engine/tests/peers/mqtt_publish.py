"""Publishes numbered readings with Eclipse Paho, a client the engine's tests did not write.

usage: mqtt_publish.py PORT COUNT RATE [START]

Message i goes to site/r{i%2}/z{i%3}/s{i%10} as {"ts": ..., "seq": i, "temp_c": i/100}, at QoS 1
from a persistent session that reconnects by itself. Prints "acked N" as acknowledgements
arrive (the tests restart brokers and engines part-way) and "done" once the broker has
acknowledged every message.
"""
import datetime
import sys
import threading
import time

import paho.mqtt.client as mqtt

port, count, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
start = int(sys.argv[4]) if len(sys.argv) > 4 else 0

acked = set()
lock = threading.Lock()


def on_publish(client, userdata, mid, reason_code, properties):
    with lock:
        acked.add(mid)


client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=f"test-publisher-{port}-{start}",
    clean_session=False,
)
client.on_publish = on_publish
client.max_inflight_messages_set(200)
client.max_queued_messages_set(0)
client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
client.connect("127.0.0.1", port, keepalive=5)
client.loop_start()

epoch = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
began = time.monotonic()
mids = []
reported = 0
for i in range(start, start + count):
    stamp = (epoch + datetime.timedelta(milliseconds=10 * i)).isoformat().replace("+00:00", "Z")
    payload = f'{{"ts": "{stamp}", "seq": {i}, "temp_c": {i / 100}}}'
    info = client.publish(f"site/r{i % 2}/z{i % 3}/s{i % 10}", payload, qos=1)
    mids.append(info.mid)
    sent = i - start + 1
    delay = began + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    with lock:
        done = len(acked)
    if done >= reported + 500:
        reported = done
        print(f"acked {done}", flush=True)

deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    with lock:
        missing = [mid for mid in mids if mid not in acked]
    if not missing:
        break
    time.sleep(0.05)
else:
    print(f"unacknowledged {len(missing)}", flush=True)
    sys.exit(1)
print(f"acked {len(mids)}", flush=True)
print("done", flush=True)
client.loop_stop()
client.disconnect()
