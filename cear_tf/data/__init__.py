"""Data sets as float32 NHWC images in [0, 1], read from tensorflow-datasets or local files."""
