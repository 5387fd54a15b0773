"""Data: synthetic lidar scenes (synthetic.py, lidar.py) and AWML info-format datasets (info_dataset.py)."""
