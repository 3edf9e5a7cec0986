"""The test suite's independent reference computation of every KPI (``docs/semantics.md``).

A plain batch computation over a whole events file: decide which lines are accepted events, sort
them by time, group them, count. It shares no code with the engine; from ``streamproc`` it only
uses the event decoder, to decide whether a message is valid. Read it top to bottom against the
definitions: ``accept`` (which events count), ``sessions``, ``carts``, ``orders``, ``traffic``,
``tickets`` (what each contributes, as :class:`~reference.common.Fact` s), ``windows`` (facts into
aligned windows), ``kpis`` (the report rows) and ``report`` (row format and comparison).
"""
