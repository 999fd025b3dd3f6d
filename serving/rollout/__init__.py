"""Progressive delivery on Triton: shadow and canary rollouts decided by live traffic (docs/rollout.md)."""
