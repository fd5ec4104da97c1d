"""Airflow examples: DAGs that use models from the Calabi registry."""
