"""What the process runs on: devices, size checks before allocation, atomic file writes."""
