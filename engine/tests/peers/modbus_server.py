"""A Modbus TCP server the engine's tests did not write (pymodbus), holding known values of
every data type in every byte order; the registers are packed here with Python's struct, not
by the engine's code.

usage: modbus_server.py PORT

Holding registers (unit 1):
    0 int16 -1234 (ABCD)           1 uint16 54321
    2 int32 -123456 (ABCD)         4 uint32 3000000000 (DCBA)
    6 float32 23.5 (BADC)          8 float32 -7.25 (CDAB)
   10 int64 -9000000000 (ABCD)    14 uint64 12345678901234 (CDAB)
   18 float64 1013.25 (DCBA)      22 string(4) "GROWROOM"
   30 uint16 215 (a temperature in tenths)
Input register 0: uint16 777. Coils 0, 1: on, off. Discrete input 0: on.
Addresses beyond these answer with an exception (illegal data address).
Prints "ready" once listening.
"""
import struct
import sys
import threading

from pymodbus.server import StartTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

port = int(sys.argv[1])


def words(fmt, value, order):
    """The registers of `value` packed big-endian, then arranged in `order`."""
    data = struct.pack(">" + fmt, value)
    pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order in ("DCBA", "BADC"):
        pairs = [p[::-1] for p in pairs]
    if order in ("DCBA", "CDAB"):
        pairs = pairs[::-1]
    return [int.from_bytes(p, "big") for p in pairs]


holding = (
    words("h", -1234, "ABCD")
    + words("H", 54321, "ABCD")
    + words("i", -123456, "ABCD")
    + words("I", 3000000000, "DCBA")
    + words("f", 23.5, "BADC")
    + words("f", -7.25, "CDAB")
    + words("q", -9000000000, "ABCD")
    + words("Q", 12345678901234, "CDAB")
    + words("d", 1013.25, "DCBA")
    + [int.from_bytes(b"GROWROOM"[i : i + 2], "big") for i in range(0, 8, 2)]
    + [0] * 4
    + [215]
)
assert len(holding) == 31

device = SimDevice(
    id=1,
    simdata=(
        [SimData(address=0, values=[True, False], datatype=DataType.BITS)],
        [SimData(address=0, values=[True], datatype=DataType.BITS)],
        [SimData(address=0, values=holding, datatype=DataType.REGISTERS)],
        [SimData(address=0, values=[777], datatype=DataType.REGISTERS)],
    ),
)


def announce():
    import socket
    import time

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    print("ready", flush=True)


threading.Thread(target=announce, daemon=True).start()
StartTcpServer(context=device, address=("127.0.0.1", port))
