"""The demo: a tiny character-level GPT trained from scratch, attested, exported and verified.

``attest.demo`` is the one package that ties the others together (callback → log → bundle →
verifier), the way a user's own training script would; the core and the three sibling packages
never import it.
"""
