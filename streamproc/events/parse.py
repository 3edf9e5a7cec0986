"""Decode and validate one message of an input topic into a normalised event.

``EventDecoder.decode(raw, family, now_ms=...)`` returns an :class:`~streamproc.events.models.Event`
or raises :class:`~streamproc.errors.InvalidEvent` with a reason code from :class:`Reason`.
msgspec does the decoding and the type/constraint checks in one pass over the bytes; what it
cannot express (time forms, enums with an ``other`` fallback, currencies, score ranges that depend
on the survey type) is checked here afterwards. Before it, size and nesting depth are checked, so
that no message can exhaust memory or the stack: every message either decodes or is rejected.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from fractions import Fraction
from itertools import accumulate, count
from typing import Any, Final

import msgspec

from streamproc.errors import InvalidEvent
from streamproc.events import models as m
from streamproc.times import rfc3339_ms

# 2000-01-01T00:00:00Z: integer times below this are almost surely seconds, not milliseconds.
MIN_EPOCH_MS: Final = 946_684_800_000
# 9999-12-31T23:59:59.999Z, the last millisecond an RFC 3339 time can name.
MAX_EPOCH_MS: Final = 253_402_300_799_999

# The deepest nesting of objects and arrays accepted. The contract itself nests three levels
# (event, items, item); the rest is room for unknown fields. msgspec recurses once per level, on
# the C stack, up to Python's recursion limit: deeper input is refused before it is decoded.
MAX_DEPTH: Final = 32


class Reason(enum.StrEnum):
    """Why a message was rejected; the ``reason`` of a dead letter and a metric label."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    TOO_LARGE = "too_large"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    WRONG_TOPIC = "wrong_topic"
    INVALID_TIME = "invalid_time"
    FUTURE_TIME = "future_time"
    NEGATIVE_MONEY = "negative_money"
    INVALID_QUANTITY = "invalid_quantity"
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    UNKNOWN_CURRENCY = "unknown_currency"
    TOO_LONG = "too_long"
    INVALID_VALUE = "invalid_value"
    TOO_LATE = "too_late"
    TOO_DEEP = "too_deep"
    PROCESSING_ERROR = "processing_error"  # an unexpected error (a bug), see ingest.py


# ISO 4217 currencies whose minor unit is not 1/100.
_MINOR_UNIT_EXPONENT: Final = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF".split(), 0),
    "XPF": 0,
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of a currency's minor unit (2 for most, 0 for JPY, 3 for KWD ...)."""
    return _MINOR_UNIT_EXPONENT.get(currency, 2)


class Converter:
    """Converts minor units of one currency into minor units of the reporting currency.

    Exact: the rate is a fraction, the result is rounded half to even.
    """

    __slots__ = ("_den", "_num")

    def __init__(self, factor: Fraction) -> None:
        self._num = factor.numerator
        self._den = factor.denominator

    def __call__(self, amount: int) -> int:
        quotient, remainder = divmod(amount * self._num, self._den)
        twice = 2 * remainder
        if twice > self._den or (twice == self._den and quotient % 2):
            quotient += 1
        return quotient


def build_converters(
    reporting_currency: str, fx_rates: Mapping[str, Decimal]
) -> dict[str, Converter]:
    """One converter per accepted currency (the reporting currency converts 1:1)."""
    target_exp = minor_unit_exponent(reporting_currency)
    converters = {reporting_currency: Converter(Fraction(1))}
    for code, rate in fx_rates.items():
        if code == reporting_currency:
            continue
        shift = Fraction(10) ** (target_exp - minor_unit_exponent(code))
        converters[code] = Converter(Fraction(rate) * shift)
    return converters


def parse_event_time(value: Any) -> m.EpochMs:
    """RFC 3339 string (``streamproc.times``), or integer epoch milliseconds -> EpochMs."""
    if type(value) is str:  # first: nearly every event's time is a string
        try:
            ms = rfc3339_ms(value)
        except ValueError as exc:  # its message: "not an RFC 3339 time" or "without a UTC offset"
            raise ValueError(f"{Reason.INVALID_TIME}: {exc}") from None
        if ms < MIN_EPOCH_MS:
            raise ValueError(f"{Reason.INVALID_TIME}: {value!r} is before 2000-01-01")
        if ms > MAX_EPOCH_MS:  # 9999-12-31 with a negative offset
            raise ValueError(f"{Reason.INVALID_TIME}: {value!r} is after 9999-12-31 in UTC")
        return m.EpochMs(ms)
    if type(value) is int:
        if value < MIN_EPOCH_MS:
            hint = " (seconds? expected milliseconds)" if value > MIN_EPOCH_MS // 1000 else ""
            raise ValueError(f"{Reason.INVALID_TIME}: {_short(value)} is before 2000-01-01{hint}")
        if value > MAX_EPOCH_MS:
            raise ValueError(f"{Reason.INVALID_TIME}: {_short(value)} is after 9999-12-31")
        return m.EpochMs(value)
    raise TypeError(
        f"{Reason.WRONG_TYPE}: expected an RFC 3339 string or integer epoch milliseconds, "
        f"got {_json_type_name(value)}"
    )


def _short(number: int) -> str:
    """An integer for a message: a 400-digit one is shown by its digit count."""
    text = str(number)
    return text if len(text) <= 24 else f"a {len(text.lstrip('-'))}-digit integer"


def nesting_depth(raw: bytes) -> int:
    """How deeply objects and arrays nest in JSON text; brackets inside strings do not count.

    An unterminated string is not recognised as one; its brackets count, which can only overstate
    the depth of text that is not JSON anyway.
    """
    marks = _JSON_STRING.sub(b"", raw).translate(_MARKS, _NOT_BRACKETS)
    # A mark is 2 for an opening and 0 for a closing bracket: after the k-th bracket, the depth
    # is the sum of the first k marks minus k. All in C: a few ms for the largest message.
    return max(map(operator.sub, accumulate(marks), count(1)), default=0)


_OPEN_BRACE, _OPEN_BRACKET = ord("{"), ord("[")
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_MARKS = bytes.maketrans(b"{[}]", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"{[}]")


def _json_type_name(value: Any) -> str:
    return {bool: "bool", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is m.EpochMs:
        return parse_event_time(obj)
    raise NotImplementedError(f"no decoder for {type_!r}")


_AT_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
_INVALID_TAG = re.compile(r"^Invalid value '(?P<value>.*)'$", re.DOTALL)
_CONSTRAINT = re.compile(
    r"^Expected `(?P<type>\w+)` (?:of length )?(?P<op>[<>]=) (?P<bound>-?\d+)$"
)
_OWN_REASON = re.compile(r"^(?P<reason>[a-z_]+): (?P<detail>.*)$", re.DOTALL)
_REASON_VALUES = frozenset(reason.value for reason in Reason)
# msgspec's words for an integer with more than 4300 digits, and for a float beyond 1.8e308.
_HUGE_INT = "Integer value out of range"
_HUGE_NUMBER = "Number out of range"
# The reason for a number outside its bounds, by field name; any other field: invalid_value.
_RANGE_REASONS: Final = {
    "quantity": Reason.INVALID_QUANTITY,
    "score": Reason.SCORE_OUT_OF_RANGE,
    "event_time": Reason.INVALID_TIME,
    "opened_at": Reason.INVALID_TIME,
}


def _leaf(path: str) -> str:
    """``$.items[0].quantity`` -> ``quantity``."""
    return re.split(r"[.\[]", path)[-1].rstrip("]")


def _from_validation_error(message: str, family: m.Family) -> InvalidEvent:
    """Map a msgspec ValidationError message to a reason code."""
    at = _AT_PATH.search(message)
    path = at.group("path") if at else "$"
    text = message[: at.start()] if at else message

    if missing := _MISSING.match(text):
        field = f"{path}.{missing.group('field')}"
        return InvalidEvent(
            Reason.MISSING_FIELD, f"missing required field `{field[2:]}`", field=field
        )
    if path == "$.event_type" and (tag := _INVALID_TAG.match(text)):
        value = tag.group("value")
        other = m.FAMILY_OF_TYPE.get(value)
        if other is not None:
            return InvalidEvent(
                Reason.WRONG_TOPIC,
                f"`{value}` is a {other} event; it does not belong on the {family} topic",
                field=path,
            )
        return InvalidEvent(
            Reason.UNKNOWN_EVENT_TYPE, f"unknown {family} event_type {value!r}", field=path
        )
    if path == "$" and text.startswith("Expected `object`"):
        return InvalidEvent(Reason.NOT_OBJECT, "the message is not a JSON object", field=None)
    if (own := _OWN_REASON.match(text)) and own.group("reason") in _REASON_VALUES:
        return InvalidEvent(own.group("reason"), own.group("detail"), field=path)
    leaf = _leaf(path)
    if constraint := _CONSTRAINT.match(text):
        kind, op, bound = constraint.group("type", "op", "bound")
        if kind == "str":
            reason = Reason.TOO_LONG if op == "<=" else Reason.INVALID_VALUE
            return InvalidEvent(reason, f"`{path[2:]}` must have length {op} {bound}", field=path)
        if leaf in m.MONEY_FIELDS and op == ">=":
            return InvalidEvent(
                Reason.NEGATIVE_MONEY, f"`{path[2:]}` must not be negative", field=path
            )
        reason = _RANGE_REASONS.get(leaf, Reason.INVALID_VALUE)
        return InvalidEvent(reason, f"`{path[2:]}` must be {op} {bound}", field=path)
    if text == _HUGE_INT:
        reason = _RANGE_REASONS.get(leaf, Reason.INVALID_VALUE)
        return InvalidEvent(reason, f"`{path[2:]}` has more than 4300 digits", field=path)
    if text.startswith("Expected `") or text == _HUGE_NUMBER:
        return InvalidEvent(Reason.WRONG_TYPE, f"`{path[2:] or 'event'}`: {text}", field=path)
    return InvalidEvent(Reason.INVALID_VALUE, message, field=path)


def _enum_table(values: frozenset[str]) -> dict[str, str]:
    return {value: value for value in values}


_CHANNEL_GROUPS = _enum_table(m.CHANNEL_GROUPS)
_DEVICE_TYPES = _enum_table(m.DEVICE_TYPES)
_PAGE_TYPES = _enum_table(m.PAGE_TYPES)
_TICKET_CHANNELS = _enum_table(m.TICKET_CHANNELS)
_PRIORITIES = _enum_table(m.PRIORITIES)
_AUTHOR_TYPES = _enum_table(m.AUTHOR_TYPES)
_SURVEY_TYPES = _enum_table(m.SURVEY_TYPES)


def _enum(table: dict[str, str], value: str) -> str:
    found = table.get(value)
    if found is None:
        found = table.get(value.lower(), "other")
    return found


SCORE_RANGES: Final = {"csat": (1, 5), "nps": (0, 10)}
_MAX_MONEY: Final = m.MAX_MONEY_MINOR


class EventDecoder:
    """Decodes message bytes of each topic family into normalised events.

    Args:
        reporting_currency: ISO 4217 code money is converted into.
        fx_rates: units of the reporting currency per unit of each other accepted currency.
        max_message_bytes: larger messages are rejected before decoding.
        max_future_ms: how far ahead of ``now_ms`` an event time may be.
    """

    def __init__(
        self,
        *,
        reporting_currency: str = "USD",
        fx_rates: Mapping[str, Decimal] | None = None,
        max_message_bytes: int = 65536,
        max_future_ms: int = 300_000,
    ) -> None:
        self.reporting_currency = reporting_currency
        self.max_message_bytes = max_message_bytes
        self.max_future_ms = max_future_ms
        self._converters = build_converters(reporting_currency, fx_rates or {})
        self._decoders = {
            family: msgspec.json.Decoder(
                m.FAMILY_TYPES[family][0] if len(types) == 1 else _union(types),
                dec_hook=_dec_hook,
            )
            for family, types in m.FAMILY_TYPES.items()
        }
        self._normalizers: dict[type[m.Event], Callable[[Any], None]] = {
            m.SessionStart: self._session_start,
            m.PageView: self._page_view,
            m.ProductView: self._priced("price_minor"),
            m.PagePing: _no_op,
            m.AddToCart: self._priced("unit_price_minor"),
            m.RemoveFromCart: _no_op,
            m.CheckoutStarted: _no_op,
            m.PaymentFailed: _no_op,
            m.OrderPlaced: self._order_placed,
            m.OrderRefunded: self._order_refunded,
            m.OrderCancelled: _no_op,
            m.TicketOpened: self._ticket_opened,
            m.MessageAdded: self._message_added,
            m.TicketEscalated: _no_op,
            m.TicketResolved: _no_op,
            m.TicketReopened: _no_op,
            m.SurveyResponse: self._survey_response,
        }

    @property
    def accepted_currencies(self) -> frozenset[str]:
        return frozenset(self._converters)

    def decode(self, raw: bytes, family: m.Family, *, now_ms: int) -> m.Event:
        """Decode, validate and normalise one message; raise InvalidEvent when it is bad."""
        if len(raw) > self.max_message_bytes:
            raise InvalidEvent(
                Reason.TOO_LARGE,
                f"message of {len(raw)} bytes exceeds the limit of {self.max_message_bytes}",
            )
        # Cheapest test first: nearly every event is one object without arrays, which two
        # memchr calls show (with int arguments: ``b"[" in raw`` raises and clears a TypeError
        # inside). Only a message with more than MAX_DEPTH brackets gets the exact scan, and
        # only if it is an object: msgspec rejects anything else at its first byte (not_object).
        if (
            (raw.rfind(_OPEN_BRACE) > 0 or _OPEN_BRACKET in raw)
            and raw.count(b"{") + raw.count(b"[") > MAX_DEPTH
            and raw.lstrip()[:1] == b"{"
            and (depth := nesting_depth(raw)) > MAX_DEPTH
        ):
            raise InvalidEvent(
                Reason.TOO_DEEP, f"objects and arrays nest {depth} deep (limit {MAX_DEPTH})"
            )
        try:
            event: m.Event = self._decoders[family].decode(raw)
        except msgspec.ValidationError as exc:
            raise _from_validation_error(str(exc), family) from None
        except msgspec.DecodeError as exc:
            raise InvalidEvent(Reason.NOT_JSON, f"not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidEvent(Reason.NOT_JSON, f"not valid UTF-8: {exc.reason}") from None
        except RecursionError:  # a backstop: the depth check above keeps msgspec from this
            raise InvalidEvent(Reason.TOO_DEEP, "objects and arrays nest too deep") from None
        if event.event_time > now_ms + self.max_future_ms:
            ahead_s = (event.event_time - now_ms) // 1000  # integers: exact for any value
            raise InvalidEvent(
                Reason.FUTURE_TIME,
                f"event_time is {ahead_s} s in the future (limit {self.max_future_ms // 1000} s)",
                field="$.event_time",
            )
        # A value already in its table is as ``_enum`` would make it: no call (nearly all are).
        device = event.device_type
        if device is not None and device not in _DEVICE_TYPES:
            event.device_type = _enum(_DEVICE_TYPES, device)
        normalize = self._normalizers[type(event)]
        if normalize is not _no_op:  # a third of the traffic is page_ping: no call for it
            normalize(event)
        return event

    # --- per-type normalisation ----------------------------------------------------------------

    def _convert(self, amount: int, currency: str, field: str) -> int:
        """``amount`` in reporting minor units; ``field`` is its path without the ``$.``."""
        converter = self._converters.get(currency)
        if converter is None:
            converter = self._converters.get(currency.upper())
            if converter is None:
                accepted = ", ".join(sorted(self._converters))
                raise InvalidEvent(
                    Reason.UNKNOWN_CURRENCY,
                    f"no exchange rate for currency {currency!r} (accepted: {accepted})",
                    field="$.currency",
                )
        converted = converter(amount)
        if converted > _MAX_MONEY:  # a rate above 1 can lift a bounded amount over it
            raise InvalidEvent(
                Reason.INVALID_VALUE,
                f"`{field}` converted to {self.reporting_currency} is {converted} minor units, "
                f"above the limit of {_MAX_MONEY}",
                field=f"$.{field}",
            )
        return converted

    def _priced(self, field: str) -> Callable[[Any], None]:
        def normalize(event: Any) -> None:
            amount = getattr(event, field)
            if event.currency is None:
                if amount is not None:
                    raise InvalidEvent(
                        Reason.MISSING_FIELD,
                        f"missing required field `currency` (required with `{field}`)",
                        field="$.currency",
                    )
                return
            converted = self._convert(amount or 0, event.currency, field)
            if amount is not None:
                setattr(event, field, converted)
            event.currency = self.reporting_currency

        return normalize

    def _session_start(self, event: m.SessionStart) -> None:
        event.channel_group = _enum(_CHANNEL_GROUPS, event.channel_group)

    def _page_view(self, event: m.PageView) -> None:
        if event.page_type not in _PAGE_TYPES:
            event.page_type = _enum(_PAGE_TYPES, event.page_type)

    def _order_placed(self, event: m.OrderPlaced) -> None:
        currency = event.currency
        event.total_minor = self._convert(event.total_minor, currency, "total_minor")
        for field in ("discount_minor", "shipping_minor", "tax_minor"):
            amount = getattr(event, field)
            if amount is not None:
                setattr(event, field, self._convert(amount, currency, field))
        if event.items:
            for i, item in enumerate(event.items):
                if item.unit_price_minor is not None:
                    item.unit_price_minor = self._convert(
                        item.unit_price_minor, currency, f"items[{i}].unit_price_minor"
                    )
        event.currency = self.reporting_currency

    def _order_refunded(self, event: m.OrderRefunded) -> None:
        event.refund_minor = self._convert(event.refund_minor, event.currency, "refund_minor")
        event.currency = self.reporting_currency

    def _ticket_opened(self, event: m.TicketOpened) -> None:
        event.channel = _enum(_TICKET_CHANNELS, event.channel)
        event.priority = _enum(_PRIORITIES, event.priority)

    def _message_added(self, event: m.MessageAdded) -> None:
        event.author_type = _enum(_AUTHOR_TYPES, event.author_type)

    def _survey_response(self, event: m.SurveyResponse) -> None:
        survey_type = _enum(_SURVEY_TYPES, event.survey_type)
        event.survey_type = survey_type
        bounds = SCORE_RANGES.get(survey_type)
        if bounds is not None and not bounds[0] <= event.score <= bounds[1]:
            raise InvalidEvent(
                Reason.SCORE_OUT_OF_RANGE,
                f"{survey_type} score {event.score} is outside {bounds[0]}-{bounds[1]}",
                field="$.score",
            )


def _no_op(event: Any) -> None:
    return None


def _union(types: tuple[type[m.Event], ...]) -> Any:
    union: Any = types[0]
    for cls in types[1:]:
        union = union | cls
    return union


def decoder_from_settings(settings: Any) -> EventDecoder:
    """Build the decoder a process uses from its Settings."""
    return EventDecoder(
        reporting_currency=settings.reporting_currency,
        fx_rates=settings.fx_rates,
        max_message_bytes=settings.max_message_bytes,
        max_future_ms=settings.max_future_seconds * 1000,
    )
