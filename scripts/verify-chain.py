#!/usr/bin/env python3
"""Verify taskledger's SHA-256 hash chain without taskledger.

Reads events in global order, either an ndjson file written by
`taskledger replay export` (a path, or standard input) or pages of
`GET /v1/events` (--url and --key), and checks that

  * positions follow each other with no gap (1, 2, 3, ...),
  * every stream's versions follow each other (1, 2, 3, ...; in a range that
    starts after position 1, from each stream's first event in the range),
  * every event's hash is sha256(previous hash || canonical bytes), with the
    canonical bytes built as README.md ("Verifying the chain yourself")
    describes. This file is meant to be a second, independent reading of
    that description: it imports nothing from taskledger and only the
    Python standard library.

Standard output gets one line, `OK: N events, positions A..B, head hash H` or
`FAILED at position N: what`; progress goes to standard error. Exit status:
0 verified, 1 a defect, 2 nothing could be checked (usage, unreadable input,
an HTTP error).

Examples:
  taskledger replay export | scripts/verify-chain.py
  scripts/verify-chain.py --expect-previous 3fa1... export-from-5001.ndjson
  scripts/verify-chain.py --url http://127.0.0.1:8080 --key "$KEY" --after 5000
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

GENESIS_HASH = bytes(32)
DOMAIN = b"taskledger-event-v1"
U64_MAX = 2**64 - 1
I64_MIN = -(2**63)
PAGE_LIMIT_MAX = 1000


class Defect(Exception):
    """The log is wrong at `position` (None: at the first event, whose
    position could not be read)."""

    def __init__(self, position, what):
        super().__init__(what)
        self.position = position
        self.what = what


class CannotCheck(Exception):
    """Nothing (more) can be checked: bad usage, unreadable input, HTTP."""


# --- canonical JSON ---------------------------------------------------------
#
# Events are parsed the way the Rust side's JSON library (serde_json) parses
# them, so that printing them again gives the text that was hashed:
# an integer literal is an integer when it fits u64 (or, when negative, i64)
# and otherwise a double; `-0` is the double -0.0; a literal with a fraction
# or an exponent is a double (correctly rounded); NaN, Infinity and numbers
# beyond the double range are refused.


def _parse_int(text):
    value = int(text)
    if text.startswith("-") and value == 0:
        return -0.0
    if I64_MIN <= value <= U64_MAX:
        return value
    return _parse_float(text)


def _parse_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range: " + text)
    return value


def _refuse_constant(name):
    raise ValueError("not JSON: " + name)


def parse_json(text):
    """Parses one JSON document with the number rules above."""
    return json.loads(
        text,
        parse_int=_parse_int,
        parse_float=_parse_float,
        parse_constant=_refuse_constant,
    )


def format_double(value):
    """A finite double as the Rust side prints it: the shortest digits that
    read back as the same double; plain notation when the decimal exponent e
    (value = d.ddd x 10^e) is from -5 to 15 (with `.0` when there is no
    fraction), else `d.ddde+X` / `d.ddde-X`."""
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits (correctly rounded).
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)  # 0.digits x 10^point
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    digits = significant.rstrip("0")
    exp10 = point - 1
    count = len(digits)
    if -5 <= exp10 <= 15:
        if count - 1 <= exp10:
            return sign + digits + "0" * (exp10 + 1 - count) + ".0"
        if exp10 >= 0:
            return sign + digits[: exp10 + 1] + "." + digits[exp10 + 1 :]
        return sign + "0." + "0" * (-exp10 - 1) + digits
    fraction = "." + digits[1:] if count > 1 else ""
    return "%s%s%se%s%d" % (sign, digits[0], fraction, "+" if exp10 >= 0 else "-", abs(exp10))


_STRING_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
for _code in range(0x20):
    _STRING_ESCAPES.setdefault(chr(_code), "\\u%04x" % _code)
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f]')


def format_string(text):
    """`"` and `\\` escaped with a backslash; backspace, form feed, newline,
    carriage return and tab as \\b \\f \\n \\r \\t; other characters below
    U+0020 as \\u00xx (lowercase hex); everything else (`/`, DEL, non-ASCII,
    U+2028) as itself."""
    return '"' + _NEEDS_ESCAPE.sub(lambda match: _STRING_ESCAPES[match.group()], text) + '"'


def canonical_json(value):
    """Canonical JSON text: no whitespace, object keys sorted by their UTF-8
    bytes at every depth, array order kept."""
    out = []
    _write_canonical(value, out)
    return "".join(out)


def _write_canonical(value, out):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_double(value))
    elif isinstance(value, str):
        out.append(format_string(value))
    elif isinstance(value, list):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write_canonical(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        keys = sorted(value, key=lambda key: key.encode("utf-8", "surrogatepass"))
        for index, key in enumerate(keys):
            if index:
                out.append(",")
            out.append(format_string(key))
            out.append(":")
            _write_canonical(value[key], out)
        out.append("}")
    else:
        raise TypeError("not a JSON value: %r" % (value,))


def canonical_bytes(value):
    """The UTF-8 bytes of the canonical JSON of `value` (a string with a lone
    surrogate has none: ValueError)."""
    try:
        return canonical_json(value).encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("a string is not valid Unicode (a lone surrogate)") from error


# --- the hash ---------------------------------------------------------------

_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)
_EPOCH_DAY = datetime.date(1970, 1, 1).toordinal()


def micros_since_epoch(text):
    """An RFC 3339 instant (`2024-05-01T12:00:00.123456Z`) as whole
    microseconds since 1970-01-01T00:00:00Z, rounded down."""
    match = _INSTANT.fullmatch(text)
    if not match:
        raise ValueError("recorded_at %r is not an RFC 3339 instant" % (text,))
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    days = datetime.date(year, month, day).toordinal() - _EPOCH_DAY
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError("recorded_at %r is not a valid time" % (text,))
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    offset = match.group(8)
    if offset != "Z":
        minutes = int(offset[1:3]) * 60 + int(offset[4:6])
        seconds -= (minutes if offset[0] == "+" else -minutes) * 60
    micros = int(((match.group(7) or "") + "000000")[:6])
    return seconds * 1_000_000 + micros


def event_hash(previous, position, event_id, stream_id, version, event_type,
               schema_version, data_json, metadata_json, recorded_at_micros):
    """sha256(previous || canonical bytes): integers big-endian, every
    variable-length field after its length as 8 bytes big-endian."""
    hasher = hashlib.sha256()
    hasher.update(previous)

    def field(raw):
        hasher.update(len(raw).to_bytes(8, "big"))
        hasher.update(raw)

    field(DOMAIN)
    hasher.update(position.to_bytes(8, "big"))
    field(event_id)
    field(stream_id)
    hasher.update(version.to_bytes(8, "big"))
    field(event_type)
    hasher.update(schema_version.to_bytes(4, "big"))
    field(data_json)
    field(metadata_json)
    hasher.update(recorded_at_micros.to_bytes(8, "big", signed=True))
    return hasher.digest()


def _is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(event, name, lowest, highest, position):
    value = event.get(name)
    if not _is_integer(value) or not lowest <= value <= highest:
        raise Defect(position, "%s is %s, not an integer from %d to %d"
                     % (name, json.dumps(value), lowest, highest))
    return value


def _text(event, name, position):
    value = event.get(name)
    if not isinstance(value, str):
        raise Defect(position, "%s is missing or not a string" % name)
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise Defect(position, "%s is not valid Unicode" % name) from None


def event_position(event):
    """The event's position: `position` (`global_position` in exports made
    before the field had one name everywhere)."""
    if "position" in event:
        return event["position"]
    return event.get("global_position")


# --- verification -----------------------------------------------------------


class Chain:
    """Checks events one at a time, in the order they come."""

    def __init__(self, previous_hash=None, first_position=None, lookup_previous=None):
        # previous_hash None: decided at the first event (the genesis hash at
        # position 1, else lookup_previous(position - 1) if given).
        self.previous_hash = previous_hash
        self.lookup_previous = lookup_previous
        self.expected = first_position  # None: whatever the first event says
        self.first = None
        self.checked = 0
        self.starts_at_genesis = first_position == 1
        self.versions = {}

    def check(self, event):
        due = self.expected
        if not isinstance(event, dict):
            raise Defect(due, "the event is not a JSON object")
        position = event_position(event)
        if not _is_integer(position) or not 1 <= position <= U64_MAX:
            raise Defect(due, "the event has no position (an integer from 1)")
        if due is None:
            due = position
            self.starts_at_genesis = position == 1
        if position != due:
            if position > due:
                raise Defect(due, "position %d is missing (the next event is at %d): removed, "
                             "or moved out of order" % (due, position))
            raise Defect(due, "position %d came where %d was due (an event repeated or out of "
                         "order)" % (position, due))
        if self.previous_hash is None:
            if position == 1:
                self.previous_hash = GENESIS_HASH
            elif self.lookup_previous is not None:
                self.previous_hash = self.lookup_previous(position - 1)
            else:
                raise CannotCheck(
                    "the input starts at position %d: give the hash of position %d with "
                    "--expect-previous (or --url and --key to read it)" % (position, position - 1)
                )

        stream_id = _text(event, "stream_id", position)
        version = _integer(event, "version", 1, U64_MAX, position)
        last = self.versions.get(stream_id)
        version_due = last + 1 if last is not None else (1 if self.starts_at_genesis else None)
        if version_due is not None and version != version_due:
            raise Defect(position, "stream %s has version %d where %d was due"
                         % (stream_id.decode("utf-8"), version, version_due))

        try:
            event_id = uuid.UUID(event.get("event_id")).bytes
        except (TypeError, ValueError, AttributeError):
            raise Defect(position, "event_id is not a UUID") from None
        event_type = _text(event, "event_type", position)
        schema_version = _integer(event, "schema_version", 0, 2**32 - 1, position)
        for name in ("data", "metadata"):
            if name not in event:
                raise Defect(position, "%s is missing" % name)
        try:
            data_json = canonical_bytes(event["data"])
            metadata_json = canonical_bytes(event["metadata"])
            recorded_at = micros_since_epoch(str(event.get("recorded_at")))
        except ValueError as error:
            raise Defect(position, str(error)) from None
        stored = event.get("hash")
        if not isinstance(stored, str) or not re.fullmatch("[0-9a-fA-F]{64}", stored):
            raise Defect(position, "hash is not 64 hexadecimal digits")
        recomputed = event_hash(self.previous_hash, position, event_id, stream_id, version,
                                event_type, schema_version, data_json, metadata_json, recorded_at)
        if recomputed != bytes.fromhex(stored):
            raise Defect(position, "the hash does not verify: this event was altered, or one "
                         "before it was removed or reordered (recomputed %s, stored %s)"
                         % (recomputed.hex(), stored.lower()))

        self.previous_hash = recomputed
        self.versions[stream_id] = version
        self.expected = position + 1
        if self.first is None:
            self.first = position
        self.checked += 1


def events_from_file(stream):
    """Each line of an ndjson export, parsed (or _Unparsable)."""
    # Lines end at b"\n" only: U+2028 and friends appear unescaped in strings.
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            yield parse_json(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            yield _Unparsable("line %d is not a JSON event: %s" % (number, error))


class _Unparsable:
    def __init__(self, why):
        self.why = why


class Api:
    """`GET /v1/events` with an API key (scope audit:read)."""

    def __init__(self, base, key):
        self.base = base.rstrip("/")
        self.key = key

    def page(self, after, limit):
        query = urllib.parse.urlencode({"after": after, "limit": limit})
        request = urllib.request.Request(
            "%s/v1/events?%s" % (self.base, query),
            headers={"Authorization": "Bearer " + self.key, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise CannotCheck("GET /v1/events?%s answered %d: %s"
                              % (query, error.code, detail)) from None
        except (urllib.error.URLError, OSError) as error:
            raise CannotCheck("GET %s/v1/events failed: %s" % (self.base, error)) from None
        try:
            items = parse_json(body.decode("utf-8"))["items"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise CannotCheck("GET /v1/events?%s gave no page of events: %s"
                              % (query, error)) from None
        if not isinstance(items, list):
            raise CannotCheck("GET /v1/events?%s gave no list of items" % query)
        return items

    def hash_at(self, position):
        items = self.page(position - 1, 1)
        if not items or not isinstance(items[0], dict) or event_position(items[0]) != position:
            raise CannotCheck("the service has no event at position %d" % position)
        what = "the hash the service gave for position %d" % position
        return parse_hash(items[0].get("hash"), what)

    def events(self, after, to, limit):
        """Each event after `after` (up to `to`), a page at a time."""
        while to is None or after < to:
            want = limit if to is None else min(limit, to - after)
            items = self.page(after, want)
            for item in items:
                yield item
            if len(items) < want:
                return
            last = event_position(items[-1])
            if not _is_integer(last):
                return  # the chain reports the bad event
            after = last


def parse_hash(text, what):
    if not isinstance(text, str) or not re.fullmatch("[0-9a-fA-F]{64}", text):
        raise CannotCheck("%s is not 64 hexadecimal digits: %r" % (what, text))
    return bytes.fromhex(text)


class Progress:
    """A line on standard error at most once a second, for long inputs."""

    def __init__(self):
        self.started = time.monotonic()
        self.last = self.started
        self.shown = False

    def tick(self, chain):
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            rate = chain.checked / max(now - self.started, 1e-9)
            sys.stderr.write("\rverified %d events, at position %d, %.0f events/s   "
                             % (chain.checked, chain.expected - 1, rate))
            sys.stderr.flush()
            self.shown = True

    def done(self):
        if self.shown:
            sys.stderr.write("\n")


def verify(events, chain, to=None):
    progress = Progress()
    try:
        for event in events:
            if isinstance(event, _Unparsable):
                raise Defect(chain.expected, event.why)
            chain.check(event)
            progress.tick(chain)
        if to is not None and (chain.expected or 1) <= to:
            missing = chain.expected or 1
            raise Defect(missing, "position %d is missing (the log ends before it)" % missing)
    finally:
        progress.done()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Verify taskledger's hash chain from a `replay export` file or GET /v1/events, "
        "independently of taskledger.",
        epilog="Exit status: 0 verified, 1 a defect (named on standard output), 2 nothing could "
        "be checked.",
    )
    parser.add_argument("file", nargs="?", help="an ndjson export (`-` or nothing: standard input)")
    parser.add_argument("--url",
                        help="the service, e.g. http://127.0.0.1:8080 (reads GET /v1/events)")
    parser.add_argument("--key", help="an API key with audit:read (default: $TASKLEDGER_API_KEY)")
    parser.add_argument("--after", type=int, default=0,
                        help="with --url: verify the events after this position (default 0)")
    parser.add_argument("--to", type=int,
                        help="with --url: the last position to verify (default: the head)")
    parser.add_argument("--limit", type=int, default=PAGE_LIMIT_MAX,
                        help="with --url: events per request, 1 to 1000 (default 1000)")
    parser.add_argument("--expect-previous", metavar="HASH",
                        help="the hash of the event before the first one (hex); needed when the "
                        "input starts after position 1, unless --url can read it")
    args = parser.parse_args(argv)

    key = args.key or os.environ.get("TASKLEDGER_API_KEY")
    if args.url and not key:
        parser.error("--url needs --key (or TASKLEDGER_API_KEY)")
    from_file = args.file is not None or not args.url
    if from_file and (args.after or args.to is not None):
        parser.error("--after and --to select a range of GET /v1/events; an export is read whole")
    if (args.after < 0 or (args.to is not None and args.to < args.after)
            or not 1 <= args.limit <= PAGE_LIMIT_MAX):
        parser.error("--after must be >= 0, --to >= --after and --limit from 1 to 1000")
    if sys.float_repr_style != "short":
        print("error: this Python does not print the shortest float repr", file=sys.stderr)
        return 2

    api = Api(args.url, key) if args.url else None
    try:
        previous = None
        if args.expect_previous is not None:
            previous = parse_hash(args.expect_previous, "--expect-previous")
        if from_file:
            chain = Chain(previous, None, api.hash_at if api else None)
            if args.file in (None, "-"):
                verify(events_from_file(sys.stdin.buffer), chain)
            else:
                try:
                    handle = open(args.file, "rb")
                except OSError as error:
                    raise CannotCheck("cannot read %s: %s" % (args.file, error.strerror)) from None
                with handle:
                    verify(events_from_file(handle), chain)
        else:
            chain = Chain(previous, args.after + 1, api.hash_at)
            verify(api.events(args.after, args.to, args.limit), chain, args.to)
    except CannotCheck as error:
        print("error: %s" % error, file=sys.stderr)
        return 2
    except Defect as defect:
        if defect.position is None:
            print("FAILED at the first event (position unknown): %s" % defect.what)
        else:
            print("FAILED at position %d: %s" % (defect.position, defect.what))
        return 1
    if chain.checked == 0:
        print("OK: 0 events")
    else:
        print("OK: %d events, positions %d..%d, head hash %s"
              % (chain.checked, chain.first, chain.expected - 1, chain.previous_hash.hex()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(2)
