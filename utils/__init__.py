"""The floor: the config schema and its reader, seeding, atomic files, metrics, statistics and
uncertainty intervals. It imports nothing of the package above it (``data``, ``models``,
``attacks``, ``defenses``, ``experiment``), not even inside a function
(``tests/test_layers.py``)."""
