"""Runnable examples: the demo story and the batch-scoring DAG."""
