"""Graphs: persistence, targets, and (next) composition, runs and schedules."""
