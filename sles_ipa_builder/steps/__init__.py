"""Native steps: Python that stands where a DIB hook script stood, and the checks and cuts before packing."""
