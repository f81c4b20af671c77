"""The policies shipped with attest: strict.json and permissive.json (docs/verifying.md)."""
