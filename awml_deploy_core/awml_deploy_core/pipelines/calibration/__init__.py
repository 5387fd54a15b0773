"""Camera-lidar calibration status: the input builder (image + projected lidar -> [5, H, W]) and the pipeline."""
