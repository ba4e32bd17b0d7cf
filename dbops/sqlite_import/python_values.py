"""The values SQLite's SQL cannot judge or print the way PostgreSQL does, handled in Python:
re-checks of decimals kept as text and of IP addresses (run only on the rows SQL points at),
and the canonical texts of floats, JSON and IP addresses for the checksum's SQLite side. The
rules in `fields` name these; nothing else does.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from decimal import Context, Decimal, localcontext

# A number as PostgreSQL's numeric input reads it (ASCII digits, C-locale spaces around it).
# Python's Decimal alone is laxer: it takes '1_000', other scripts' digits and more spaces.
NUMERIC_TEXT = re.compile(
    r"[ \t\n\r\v\f]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*", re.ASCII
)


def _recheck_decimal(max_digits: int, decimal_places: int):
    step = Decimal(1).scaleb(-decimal_places)

    def recheck(value) -> str | None:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if not NUMERIC_TEXT.fullmatch(text):
            return "text in a decimal column"
        number = Decimal(text.strip(" \t\n\r\v\f"))
        # The size first: quantize() fails on a number too long for the context.
        if number != 0 and number.adjusted() + 1 > max_digits - decimal_places:
            return f"more than {max_digits - decimal_places} digits before the decimal point"
        with localcontext(Context(prec=max(max_digits, 28))):
            if number.quantize(step) != number:
                return f"more than {decimal_places} decimal places"
        return None

    return recheck


def _recheck_ip(value) -> str | None:
    try:
        ipaddress.ip_address(value.decode("utf-8") if isinstance(value, bytes) else value)
    except (ValueError, UnicodeDecodeError):
        return "not an IP address"
    return None


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def float_canonical(value) -> str:
    """A float by its exact bits (PostgreSQL: float8send)."""
    return struct.pack(">d", float(value)).hex()


def _jsonb_text(value) -> str:
    """Render a parsed JSON value the way PostgreSQL prints jsonb."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: (len(key.encode()), key.encode()))
        return "{" + ", ".join(f"{_jsonb_text(k)}: {_jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if value.is_zero():  # PostgreSQL's numeric has no negative zero: -0.0 prints as 0.0
        value = value.copy_abs()
    return format(value, "f")


def json_canonical(value) -> str:
    return _jsonb_text(json.loads(_text(value), parse_float=Decimal, parse_int=Decimal))


def ip_canonical(value) -> str:
    """An address as PostgreSQL's host() prints it: an IPv6 address that embeds an IPv4 one
    (::ffff:1.2.3.4, ::1.2.3.4) with the IPv4 part dotted, as inet_net_ntop does, where
    Python prints hexadecimal words."""
    address = ipaddress.ip_address(_text(value))
    if address.version == 6:
        words = struct.unpack(">8H", address.packed)
        mapped = words[:5] == (0,) * 5 and words[5] == 0xFFFF
        compatible = words[:6] == (0,) * 6 and words[6] != 0
        if mapped or compatible:
            dotted = ipaddress.IPv4Address(address.packed[12:])
            return f"::ffff:{dotted}" if mapped else f"::{dotted}"
    return str(address)
