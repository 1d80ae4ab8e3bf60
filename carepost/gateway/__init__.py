"""The SMTP gateway: customers' mail servers relay outbound mail through carepost
(docs/gateway.md)."""
