"""``python -m bench``: Calabi against the real MLflow server, through the same MLflow client.

Modules: ``servers`` (start/stop the servers under test), ``workload`` (the operations and a
bounded multi-threaded driver), ``split`` (the 8 client threads over 2 processes, so that no
single GIL-bound client process sets the 8-thread throughput), ``run`` (the interleaved run),
``report`` (markdown tables), ``__main__`` (command line and ``RESULTS.md``).
"""
