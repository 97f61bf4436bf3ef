"""Shared test helpers: imported by test modules, never the other way round."""
