"""framewatch: the service that watches folders of recordings and analyses them with Qwen3-VL."""

__version__ = "0.1.0"
