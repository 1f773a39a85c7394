"""The supervisor: one long-lived Trio process per project that owns every run.

It holds the project's lock (:mod:`._pidlock`), settles what a previous one left open
(:mod:`._recovery`), answers the protocol on its socket (:mod:`._server`, one handler
per request in :mod:`._handlers`) and keeps every run in the registry's nursery
(:mod:`lattice_workers.actors`); :mod:`._main` ties these together and stops them in
order. The modules a client needs are Trio-free: :mod:`.control` finds, starts and
stops a supervisor, and :mod:`.doctor` settles the runs none owns. Nothing is
re-exported here, so that importing the package costs nothing: a CLI command imports
the one module it uses.
"""
