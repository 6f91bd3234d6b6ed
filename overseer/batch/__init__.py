"""batch: many requests at once, each a run of one engine, here in threads or on a Dask cluster.

Holds ``inputs`` (the request file: JSON Lines or one request a line, with an id each),
``output`` (the JSON Lines results file: what a rerun skips, the batch id, one line per id),
``results`` (one finished request and its output line), ``local`` (the requests on threads
sharing one engine and its caps) and ``cluster`` (each request a task on Dask's distributed
scheduler; the one module that imports ``distributed``).
May import: foundation, events, config, core, backends, journal and the engine facade. Must not
hold: the command line (``overseer.interfaces.batch``) or any display.
"""
