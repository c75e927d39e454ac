"""Code that runs outside the platform, in an app: the reference release-channel client and
the reference decoding of its model's output (``detections``)."""
