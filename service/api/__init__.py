"""The HTTP API: thin routes over the business modules."""
