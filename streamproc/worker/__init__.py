"""The worker: Faust runs the consumer group, the state table and its changelog recovery; batches
of input reach the framework-free pipeline (``pipeline.py``) and its partition engines.

``app.py`` builds the Faust app, ``consumer.py`` hands fetched batches over, ``state.py`` is the
changelogged state table, ``tasks.py`` processes batches and ticks. Only these four import faust;
``pipeline.py`` does not.
"""
