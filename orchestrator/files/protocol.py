"""The framing between a session and its libguestfs worker (`worker.py`):
one kind byte (``J`` JSON, ``B`` bytes), a 4-byte big-endian length, the payload."""
import struct

HEADER = struct.Struct(">cI")
