"""asv benchmark suite of dualconv (see asv.conf.json at the repository root).

Run against the current environment:  asv run --python=same
"""
