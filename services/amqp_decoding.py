"""py-amqp reading what anyone who may publish can send, without stopping the service.

py-amqp decodes each message's properties (content type, reply_to, correlation id, ...) and its
routing key as strict UTF-8, and a header's timestamp with ``datetime.fromtimestamp``, while it
reads the frames, before nameko or these services see the message: an invalid byte there, or a
timestamp out of range (RabbitMQ accepts both), raises out of the consumer's connection, nameko
kills the container, and the message, back in its queue, kills every instance that takes it.

:func:`install` makes the decoding of a message that fails so retry leniently: invalid UTF-8 as
lone surrogates (``surrogateescape``), a timestamp out of range as the largest datetime. The
message then reaches nameko, which answers it or drops it (services/entrypoints.py: a reply_to
that is not valid text cannot be answered). Well-formed frames decode exactly as before, with
no extra cost; the retry runs only after py-amqp has failed on a frame.
"""

import datetime

import amqp.abstract_channel
import amqp.serialization
from amqp.spec import Basic

DECODING_ERRORS = (UnicodeDecodeError, OverflowError, OSError, ValueError)


class _LenientBytes(bytes):
    """Bytes whose slices decode invalid UTF-8 to lone surrogates instead of raising."""

    def __getitem__(self, key):
        item = bytes.__getitem__(self, key)
        return _LenientBytes(item) if isinstance(key, slice) else item

    def decode(self, encoding="utf-8", errors="strict"):
        return bytes.decode(self, encoding, "surrogateescape")


class _ClampedDatetime(datetime.datetime):
    """What py-amqp's decoder calls as ``datetime``, during a lenient retry only."""

    @classmethod
    def fromtimestamp(cls, timestamp, tz=None):
        try:
            return datetime.datetime.fromtimestamp(timestamp, tz)
        except (OverflowError, OSError, ValueError):
            return datetime.datetime.max.replace(tzinfo=tz)


def _lenient(strict_decode, buffer_at):
    """``strict_decode`` retried, when it fails, on a lenient copy of its argument number
    ``buffer_at`` (the frame's bytes)."""

    def decode(*args):
        try:
            return strict_decode(*args)
        except DECODING_ERRORS:
            args = list(args)
            args[buffer_at] = _LenientBytes(args[buffer_at])
            saved = amqp.serialization.datetime
            amqp.serialization.datetime = _ClampedDatetime  # no yield until restored
            try:
                return strict_decode(*args)
            finally:
                amqp.serialization.datetime = saved

    decode.lenient = True
    return decode


def install():
    """Once per process (services/entrypoints.py imports it)."""
    properties = amqp.serialization.PROPERTY_CLASSES
    if not getattr(properties[Basic.CLASS_ID], "lenient", False):
        # decode_properties_basic(buf, offset)
        properties[Basic.CLASS_ID] = _lenient(properties[Basic.CLASS_ID], buffer_at=0)
    if not getattr(amqp.abstract_channel.loads, "lenient", False):
        # loads(format, buf, offset): a method frame's arguments, the routing key among them
        amqp.abstract_channel.loads = _lenient(amqp.abstract_channel.loads, buffer_at=1)
