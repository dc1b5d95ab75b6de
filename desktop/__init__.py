"""The Qt desktop application (imported only by the front door)."""
