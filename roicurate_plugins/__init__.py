"""Built-in roicurate plugins; each registers through the same hooks a third-party plugin uses."""
