"""What the process runs on: devices, size checks before allocation, atomic file writes, the CPU thread budget,
freed memory reused while evaluating, and its place in a job of several processes (torchrun)."""
