"""Signing keys and JWS, shared by tokens (access tokens, revocation list) and audit
(checkpoints): the keys, sealed under the master key, and the compact signatures."""
