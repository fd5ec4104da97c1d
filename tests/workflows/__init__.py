"""Promotion workflow tests on the time-skipping server with the real activities and services."""
