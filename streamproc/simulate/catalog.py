"""Stores, their currencies and their products with prices.

Every store sells the same catalog; prices are drawn once in USD (log-normal) and converted with
approximate rates into each store's currency, rounded to shop-like prices (x.99).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from decimal import Decimal

from streamproc.events.parse import minor_unit_exponent
from streamproc.simulate.config import REPORTING_CURRENCY, SimConfig, store_ids

# Rough units of each currency per USD: only for plausible prices (the processor uses its own
# configured rates). Currencies not listed are priced 1:1.
UNITS_PER_USD = {
    "USD": 1.0,
    "EUR": 0.92,
    "GBP": 0.79,
    "CHF": 0.88,
    "CAD": 1.36,
    "AUD": 1.52,
    "JPY": 150.0,
    "SEK": 10.5,
    "NOK": 10.7,
    "DKK": 6.9,
    "PLN": 4.0,
    "CZK": 23.0,
    "INR": 83.0,
    "BRL": 5.0,
    "MXN": 17.0,
    "KWD": 0.31,
}
_COUNTRIES = {
    "USD": ("US", "US", "US", "US", "CA", "MX"),
    "EUR": ("DE", "FR", "NL", "ES", "IT", "AT", "BE", "IE"),
    "GBP": ("GB", "GB", "GB", "IE"),
    "JPY": ("JP",),
    "CAD": ("CA",),
    "AUD": ("AU", "NZ"),
    "CHF": ("CH",),
}
_OTHER_COUNTRIES = ("US", "GB", "DE", "FR", "CA", "AU", "NL", "SE", "PL", "IN", "BR")
_TAX_RATE = {"USD": 0.07, "JPY": 0.10, "CAD": 0.13, "AUD": 0.10}  # else a VAT-like 20 %


def convert_usd_cents(cents: float, currency: str) -> int:
    """USD cents -> minor units of ``currency`` at the approximate rate (not rounded to .99)."""
    rate = UNITS_PER_USD.get(currency, 1.0)
    scale = 10.0 ** (minor_unit_exponent(currency) - 2)
    return round(cents * rate * scale)


def shop_price(minor: int, currency: str) -> int:
    """Round to a shop-like price: 12.99 (cents), 12.990 (fils), 1,300 (yen)."""
    exponent = minor_unit_exponent(currency)
    if exponent < 2:
        step = 100  # yen and other currencies without cents: whole hundreds
        return max(step, round(minor / step) * step)
    unit: int = 10**exponent
    cents: int = 10 ** (exponent - 2)
    return (minor // unit) * unit + unit - cents


def fx_rates(config: SimConfig) -> dict[str, Decimal]:
    """Approximate rates (USD per unit) for the non-USD currencies of a run, as a decoder needs."""
    codes = sorted(set(config.currencies.values()) - {REPORTING_CURRENCY})
    return {code: Decimal(f"{1 / UNITS_PER_USD.get(code, 1.0):.6g}") for code in codes}


@dataclass(frozen=True, slots=True)
class Store:
    """A storefront: its id, currency, price list and shipping rules (in its currency)."""

    store_id: str
    currency: str
    prices: tuple[int, ...]
    shipping_minor: int
    free_shipping_from_minor: int
    tax_rate: float
    countries: tuple[str, ...]


class Catalog:
    """The stores of a run (Zipf-skewed traffic) and one product list with Zipf popularity."""

    def __init__(self, rng: random.Random, config: SimConfig) -> None:
        funnel = config.funnel
        mu = math.log(funnel.median_price_usd * 100)
        usd_cents = [rng.lognormvariate(mu, 0.8) for _ in range(funnel.catalog_size)]
        width = len(str(funnel.catalog_size))
        self.product_ids = tuple(f"sku-{n:0{width}d}" for n in range(1, funnel.catalog_size + 1))
        popularity = [1 / (rank**1.05) for rank in range(1, funnel.catalog_size + 1)]
        self._product_cum = list(itertools.accumulate(popularity))
        price_lists: dict[str, tuple[int, ...]] = {}
        self.stores: list[Store] = []
        for store_id in store_ids(config.stores):
            currency = config.currencies.get(store_id, REPORTING_CURRENCY)
            if currency not in price_lists:
                price_lists[currency] = tuple(
                    shop_price(convert_usd_cents(c, currency), currency) for c in usd_cents
                )
            self.stores.append(_store(store_id, currency, price_lists[currency]))
        shares = [1 / (rank**config.store_skew) for rank in range(1, config.stores + 1)]
        self._store_cum = list(itertools.accumulate(shares))

    def pick_store(self, rng: random.Random) -> Store:
        index = bisect.bisect_right(self._store_cum, rng.random() * self._store_cum[-1])
        return self.stores[min(index, len(self.stores) - 1)]

    def pick_product(self, rng: random.Random) -> int:
        """Index of a product, popular ones more often."""
        index = bisect.bisect_right(self._product_cum, rng.random() * self._product_cum[-1])
        return min(index, len(self.product_ids) - 1)


def _store(store_id: str, currency: str, prices: tuple[int, ...]) -> Store:
    return Store(
        store_id=store_id,
        currency=currency,
        prices=prices,
        shipping_minor=shop_price(convert_usd_cents(599, currency), currency),
        free_shipping_from_minor=convert_usd_cents(5000, currency),
        tax_rate=_TAX_RATE.get(currency, 0.20),
        countries=_COUNTRIES.get(currency, _OTHER_COUNTRIES),
    )
