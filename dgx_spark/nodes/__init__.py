"""Other DGX machines in one view: nodes, their pollers, forwarding and the merged list.

A *node* is another copy of this app, reached at its URL with its API token.
``local`` is always the machine this app runs on. See docs/api.md, "Nodes".
"""
