"""Registries at either end of a conversion, reached through skopeo (flow.py says how a run goes)."""
