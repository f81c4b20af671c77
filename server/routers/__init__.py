"""One router per resource of the REST API (DESIGN §5)."""
