"""imageio_ext."""
