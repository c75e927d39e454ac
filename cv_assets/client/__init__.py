"""Code that runs outside the platform, in an app: the reference release-channel client."""
