"""Events, notifications and the history of ended operations.

Plain Python (no Reflex): the detector probe turns consecutive snapshots into
transitions, the recorder thread stores them with the history, and the webhook
thread sends them out. ``query`` holds the search/filter/sort shared by the API
and the UI.
"""
