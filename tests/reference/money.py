"""Money into minor units of the reporting currency: exact rate, rounded half to even."""

from __future__ import annotations

from fractions import Fraction

from reference.common import ReferenceSettings

# ISO 4217 currencies whose minor unit is not a hundredth; every other code has 2 decimals.
NO_DECIMALS = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()
)
THREE_DECIMALS = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
FOUR_DECIMALS = frozenset("CLF UYW".split())


def decimals(currency: str) -> int:
    """Decimal places of a currency's minor unit (JPY 0, USD 2, KWD 3)."""
    if currency in NO_DECIMALS:
        return 0
    if currency in THREE_DECIMALS:
        return 3
    if currency in FOUR_DECIMALS:
        return 4
    return 2


def to_reporting_minor(amount: int, currency: str, settings: ReferenceSettings) -> int:
    """``amount`` minor units of ``currency`` in minor units of the reporting currency.

    The rate is "units of the reporting currency per unit of ``currency``"; a currency code is
    matched as written, else upper-cased (the decoder has already rejected unknown ones).
    """
    known = {settings.reporting_currency, *settings.fx_rates}
    code = currency if currency in known else currency.upper()
    if code == settings.reporting_currency:
        return amount
    rate = Fraction(settings.fx_rates[code])
    shift = Fraction(10) ** (decimals(settings.reporting_currency) - decimals(code))
    # round() of a Fraction rounds half to even.
    return round(amount * rate * shift)


def to_major(minor: int, settings: ReferenceSettings) -> float:
    """Minor units of the reporting currency as a (correctly rounded) major-unit number."""
    scale: int = 10 ** decimals(settings.reporting_currency)
    return minor / scale
