"""Stream signatures shared by the core, the load parser and the host link."""

from amaranth.lib import data, stream

#: A byte stream with a frame/chunk end marker on its final byte.
BYTE_STREAM = stream.Signature(data.StructLayout({"data": 8, "last": 1}))
