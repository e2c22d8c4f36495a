"""UI components. ``operations_tab`` is the one to embed; the rest are its parts."""
