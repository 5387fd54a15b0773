"""YOLOX pre/post-processing: letterbox -> graph -> decode -> per-class NMS -> boxes in image pixels."""
