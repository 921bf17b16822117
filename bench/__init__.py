"""`make bench`: the console served as in production, measured under load (see bench/run.py)."""
