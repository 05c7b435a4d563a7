"""The roof: the runner above the algorithms. It checks a config against the registries
(``validation``), plans the grid and its keys (``planning``), computes cells (``workspace``,
``execution``, ``executors``, ``pipeline``), keeps the results folder (``results_folder``) and
writes the reports (``reporting``, ``summary``, ``tables``, ``figures``); ``fingerprint`` is a
command-line tool. Nothing below (``utils``, ``data``, ``models``, ``attacks``, ``defenses``)
imports it."""
