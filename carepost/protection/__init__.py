"""Send-time protection: every outgoing message leaves as the policy decides (docs/policy.md)."""
