"""Small shared helpers: devices, atomic file output."""
