"""``python -m bench``: Calabi against the real MLflow server, its promotion engine against bare Temporal,
and Calabi on PostgreSQL at 100,000 versions.

Registry part: ``servers`` (start/stop the servers under test), ``workload`` (the operations and a
bounded multi-threaded driver), ``split`` (the 8 client threads over 2 processes, so that no
single GIL-bound client process sets the 8-thread throughput), ``run`` (the interleaved run),
``report`` (markdown tables), ``__main__`` (command line and ``RESULTS.md``).

Engine part: ``floor_workflow`` and ``floor_worker`` (the floor: a passing promotion's activities
as no-ops), ``engine_candidates`` (models that pass every default check), ``engine_processes``
(children, their CPU, no orphans), ``engine_history`` (timings from Temporal histories),
``engine_rounds`` (N at once, on each side), ``engine_run`` (the run), ``engine_report`` (the
Engine section).

Scale part: ``scale_plan`` (clones of a template model and their re-chained audit events, pure),
``scale_seed`` (COPY them into PostgreSQL, hard-link their artifact trees, check the invariants),
``scale_run`` (PostgreSQL, the servers, the measurements), ``scale_report`` (the Scale section).
"""
