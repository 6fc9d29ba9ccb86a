"""``krakenfeed up``: a KrakenFeed on one machine, and the commands that read its results.

``manifest`` validates the feed, ``store`` finds or starts the PostgreSQL that
keeps the results, ``supervisor`` runs the workers as restarted child processes,
``monitor`` watches the feed's topics, ``view`` draws the terminal, ``up`` wires
them together, ``demo`` is the bundled labelled session, and ``results`` and
``plot`` read what a run left behind.
"""
