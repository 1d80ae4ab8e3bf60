"""Webhooks: tenant endpoints that receive signed event deliveries (a transactional outbox)."""
