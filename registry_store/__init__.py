"""registry_store package."""
