"""The collector: discovery, folding, classification and enrichment of operations.

Plain Python; nothing here imports Reflex.
"""
