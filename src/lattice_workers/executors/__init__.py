"""Executors other than the local one: where a worker runs when it is not this machine.

The local executor lives beside the attempt (``actors/_executor.py``); the ones here
need an optional dependency each (``pip install 'lattice-workers[ray]'``) and are
imported only when the board's config asks for them.
"""
