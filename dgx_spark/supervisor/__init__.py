"""The supervisor: launch, stop, re-adopt and log operations this dashboard starts (no Reflex here)."""
