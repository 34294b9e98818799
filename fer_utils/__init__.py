"""fer_utils: helper package of the reproducible FER study (CNN vs CNN + caption features)."""
__version__ = "0.1.0"
