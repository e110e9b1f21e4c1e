"""What the process runs on: devices, size checks before allocation, atomic file writes, the CPU thread budget,
and its place in a job of several processes (torchrun)."""
