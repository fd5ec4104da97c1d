"""``python -m bench``: Calabi against the real MLflow server, through the same MLflow client.

Modules: ``servers`` (start/stop the servers under test), ``workload`` (the operations and a
bounded multi-threaded driver), ``report`` (markdown tables), ``__main__`` (the run).
"""
