"""Floor 1: the model library — text model, image model and backbones, fusion, the bundle on disk, the Classifier."""
