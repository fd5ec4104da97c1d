"""Calabi Registry: the team's own code (API, CLI, settings, composition root, client)."""
