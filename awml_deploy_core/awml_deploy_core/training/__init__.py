"""Training of the small CenterPoint on synthetic scenes (targets, augmentation, the train command)."""
