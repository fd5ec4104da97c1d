"""The ``calabi`` command line: ``main`` (the root app) and one module per command group.

User commands (``models``, ``versions``, ``aliases``, ``tags``, ``audit``, ``users``, ``login``,
``promotions``, ``promotion_status``, ``serving_schema``) are clients of the server's HTTP API
through ``http`` and ``context``, and import no registry code; ``serve`` runs the server itself.
"""
