"""`make bench`: what the dashboard costs, measured against Glances and the /proc floor."""
