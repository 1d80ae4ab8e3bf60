"""The protection policy: per-tenant documents and the pure decision of how each
message goes to each recipient (see docs/policy.md)."""
