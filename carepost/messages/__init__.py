"""The email outbox: messages as durable rows, the sending API, campaigns and delivery."""
