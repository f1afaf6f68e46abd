"""A Sparkplug B edge node with one device, built on pysparkplug's payloads (generated from the
published sparkplug_b.proto) and Eclipse Paho; the test drives it line by line on stdin.

usage: sparkplug_node.py PORT GROUP NODE [PRIMARY_HOST]

With a primary host, the node follows its STATE as Sparkplug 3.0 asks: while the host is
offline, data is stored rather than published; when it comes back online the node is born again
and sends what it stored as historical values ("stored N" on stdout).

Commands (one per line; each answers "ok COMMAND" once published):
  connect                 connect (NDEATH as the will), then NBIRTH and the device's DBIRTH
  data NAME=VALUE ...     NDATA by alias only; ddata NAME=VALUE ... is the device's DDATA
  skip                    use up a sequence number without publishing (a lost message)
  historical NAME=VALUE AGE_S   NDATA of a historical value AGE_S seconds old
  quality NAME=VALUE CODE NDATA with a Quality property
  ddeath                  the device's DDEATH
  kill                    drop the connection without DISCONNECT (the broker sends the will)
  quit
A rebirth command (NCMD "Node Control/Rebirth") is answered with NBIRTH and DBIRTH again, and
"rebirth" on stdout.
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from pysparkplug import DataType, DBirth, DData, DDeath, Metric, NBirth, NCmd, NData, NDeath
from pysparkplug import get_current_timestamp
from pysparkplug._protobuf import Metric as PbMetric, Payload as PbPayload

port, group, node = int(sys.argv[1]), sys.argv[2], sys.argv[3]
primary = sys.argv[4] if len(sys.argv) > 4 else None
host_online = primary is None
stored = []  # (timestamp, metrics) kept while the primary host is offline
device = "room1"
base = f"spBv1.0/{group}"
lock = threading.Lock()
seq = -1
bd_seq = 7

NODE_METRICS = {
    "temp": (1, DataType.FLOAT, 21.5),
    "rh": (2, DataType.DOUBLE, 60.25),
    "fan": (3, DataType.BOOLEAN, True),
    "offset": (4, DataType.INT32, -3),
    "mode": (5, DataType.STRING, "auto"),
}
DEVICE_METRICS = {
    "co2": (10, DataType.UINT16, 900),
    "temp": (11, DataType.FLOAT, 22.0),
}


def next_seq():
    global seq
    seq = (seq + 1) % 256
    return seq


say_lock = threading.Lock()


def say(text):
    # One write per line: print() writes the text and the newline separately, and lines from
    # Paho's thread and the main one would interleave.
    with say_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def bd_seq_metric(now):
    return Metric(now, "bdSeq", DataType.UINT64, value=bd_seq)


def births():
    global seq
    with lock:
        seq = -1
        now = get_current_timestamp()
        metrics = [bd_seq_metric(now)] + [
            Metric(now, name, dtype, value=value, alias=alias)
            for name, (alias, dtype, value) in NODE_METRICS.items()
        ]
        client.publish(f"{base}/NBIRTH/{node}", NBirth(now, next_seq(), tuple(metrics)).encode())
        metrics = [
            Metric(now, name, dtype, value=value, alias=alias)
            for name, (alias, dtype, value) in DEVICE_METRICS.items()
        ]
        client.publish(
            f"{base}/DBIRTH/{node}/{device}", DBirth(now, next_seq(), tuple(metrics)).encode()
        ).wait_for_publish()


def values(pairs, table):
    now = get_current_timestamp()
    metrics = []
    for pair in pairs:
        name, text = pair.split("=")
        alias, dtype, _ = table[name]
        value = {DataType.BOOLEAN: lambda t: t == "true", DataType.STRING: str}.get(
            dtype, int if "INT" in dtype.name else float
        )(text)
        metrics.append(Metric(now, None, dtype, value=value, alias=alias))
    return now, tuple(metrics)


def rebirth():
    births()
    say("rebirth")


def host_came_back():
    births()
    with lock:
        for then, metrics in stored:
            historical = tuple(
                Metric(then, None, m.datatype, value=m.value, alias=m.alias, is_historical=True)
                for m in metrics
            )
            payload = NData(get_current_timestamp(), next_seq(), historical)
            client.publish(f"{base}/NDATA/{node}", payload.encode()).wait_for_publish()
        count = len(stored)
        stored.clear()
    say(f"stored {count}")


def on_message(client, userdata, message):
    global host_online
    if message.topic.startswith("spBv1.0/STATE/"):
        online = json.loads(message.payload)["online"]
        if online and not host_online:
            threading.Thread(target=host_came_back).start()
        host_online = online
        say("host online" if online else "host offline")
        return
    command = NCmd.decode(message.payload)
    if any(m.name == "Node Control/Rebirth" and m.value for m in command.metrics):
        # Not on Paho's network thread: waiting there for a publish would wait forever.
        threading.Thread(target=rebirth).start()


client = mqtt.Client(client_id=f"edge-{node}", clean_session=True)
client.on_message = on_message
client.will_set(
    f"{base}/NDEATH/{node}",
    NDeath(get_current_timestamp(), bd_seq_metric(get_current_timestamp())).encode(),
    qos=1,
)

for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    command = words[0]
    if command == "connect":
        client.connect("127.0.0.1", port, keepalive=30)
        client.subscribe(f"{base}/NCMD/{node}")
        if primary:
            client.subscribe(f"spBv1.0/STATE/{primary}", qos=1)
        client.loop_start()
        if not primary:
            births()  # with a primary host, once its STATE says online
    elif command in ("data", "ddata"):
        table = NODE_METRICS if command == "data" else DEVICE_METRICS
        with lock:
            now, metrics = values(words[1:], table)
            if not host_online:
                stored.append((now, metrics))
                say(f"ok {command}")
                continue
            if command == "data":
                payload, topic = NData(now, next_seq(), metrics), f"{base}/NDATA/{node}"
            else:
                payload, topic = DData(now, next_seq(), metrics), f"{base}/DDATA/{node}/{device}"
            client.publish(topic, payload.encode()).wait_for_publish()
    elif command == "skip":
        with lock:
            next_seq()
    elif command == "historical":
        with lock:
            name, text = words[1].split("=")
            alias, dtype, _ = NODE_METRICS[name]
            then = get_current_timestamp() - int(words[2]) * 1000
            metric = Metric(then, None, dtype, value=float(text), alias=alias, is_historical=True)
            payload = NData(get_current_timestamp(), next_seq(), (metric,))
            client.publish(f"{base}/NDATA/{node}", payload.encode()).wait_for_publish()
    elif command == "quality":
        # pysparkplug has no properties: set the Quality property on its protobuf directly.
        with lock:
            name, text = words[1].split("=")
            alias, dtype, _ = NODE_METRICS[name]
            payload = PbPayload()
            payload.timestamp = get_current_timestamp()
            payload.seq = next_seq()
            metric: PbMetric = payload.metrics.add()
            metric.alias = alias
            metric.timestamp = payload.timestamp
            metric.float_value = float(text)
            metric.properties.keys.append("Quality")
            quality = metric.properties.values.add()
            quality.type = DataType.INT32
            quality.int_value = int(words[2])
            client.publish(f"{base}/NDATA/{node}", payload.SerializeToString()).wait_for_publish()
    elif command == "ddeath":
        with lock:
            payload = DDeath(get_current_timestamp(), next_seq())
            client.publish(f"{base}/DDEATH/{node}/{device}", payload.encode()).wait_for_publish()
    elif command == "kill":
        client.loop_stop()
        client.socket().close()
    elif command == "quit":
        break
    say(f"ok {command}")
